package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

// purgeFile names the deletions a purge writes, where a `deleted` file's
// name would be.
const purgeFile = "former members (export.former_members: purge)"

// purgeChunk bounds the LIKE terms of one candidate query.
const purgeChunk = 32

// purge writes, into each sink's transaction, the deletion of the
// resources of the patients who left the Group in this run
// (export.former_members: purge), and returns the count per sink. A
// leaver is a patient with an open stay in this source's Group in that
// sink whom the run's membership no longer lists and who has no open stay
// in another source or Group of the namespace. Purged are the leaver's
// Patient and every resource whose Patient references all name leavers,
// except the shared types (transform.Shared): what another member also
// references, and Practitioners, Organizations and the like, stay.
func (r *Runner) purge(ctx context.Context, info sinks.RunInfo, m *sinks.Membership, targets []sinks.Sink,
	txns map[string]sinks.Txn, log *slog.Logger) (map[string]int64, error) {
	out := map[string]int64{}
	if len(m.Patients) == 0 {
		// A Group read that lists nobody is more often a server fault than
		// an emptied cohort: never let it empty the warehouse.
		log.Warn("the Group lists no members: former_members purge skipped this run", "group", m.Group)
		return out, nil
	}
	origin := transform.Origin{Namespace: info.Namespace, Source: r.Source, ExportID: info.ExportID, TransactionTime: info.TransactionTime}
	for _, s := range targets {
		q, ok := s.(sinks.Querier)
		if !ok {
			return nil, fmt.Errorf("sink %s cannot be read, so export.former_members: purge cannot find the leavers' data", s.Name())
		}
		leavers, err := leaversIn(ctx, q, info, m)
		if err != nil {
			return nil, fmt.Errorf("purge: sink %s: %w", s.Name(), err)
		}
		if len(leavers) == 0 {
			continue
		}
		keys, err := compartments(ctx, q, info.Namespace, leavers)
		if err != nil {
			return nil, fmt.Errorf("purge: sink %s: %w", s.Name(), err)
		}
		b := transform.DeletedBatch(memory.DefaultAllocator, origin, purgeFile, keys)
		if err := txns[s.Name()].Write(ctx, b); err != nil {
			return nil, fmt.Errorf("purge: write to sink %s: %w", s.Name(), err)
		}
		out[s.Name()] = int64(len(keys))
		log.Info("purging the data of former members", "sink", s.Name(), "group", m.Group,
			"patients", len(leavers), "resources", len(keys))
	}
	return out, nil
}

// leaversIn lists the patients whose stay in the run's Group ends with
// this run and who are no current member elsewhere in the namespace.
func leaversIn(ctx context.Context, q sinks.Querier, info sinks.RunInfo, m *sinks.Membership) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT patient_id, source = $2 AND group_id = $3 FROM `+schemas.CurrentMemberView+`
		WHERE namespace = $1`, info.Namespace, info.Source, m.Group)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	mine, elsewhere := map[string]bool{}, map[string]bool{}
	for rows.Next() {
		var p string
		var own bool
		if err := rows.Scan(&p, &own); err != nil {
			return nil, err
		}
		if own {
			mine[p] = true
		} else {
			elsewhere[p] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []string
	for p := range mine {
		if _, listed := slices.BinarySearch(m.Patients, p); !elsewhere[p] && !listed {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// compartments finds the keys to purge for leavers: a text search narrows
// the raw landing to resources that mention one of them, and their
// references decide.
func compartments(ctx context.Context, q sinks.Querier, namespace string, leavers []string) ([]transform.Key, error) {
	gone := map[string]bool{}
	keys := make([]transform.Key, 0, len(leavers))
	for _, p := range leavers {
		gone[p] = true
		keys = append(keys, transform.Key{Type: "Patient", ID: p})
	}
	for chunk := range slices.Chunk(leavers, purgeChunk) {
		found, err := compartmentChunk(ctx, q, namespace, chunk, gone)
		if err != nil {
			return nil, err
		}
		keys = append(keys, found...)
	}
	// A resource mentioning two leavers matches two chunks.
	slices.SortFunc(keys, func(a, b transform.Key) int { return strings.Compare(a.Type+"/"+a.ID, b.Type+"/"+b.ID) })
	return slices.Compact(keys), nil
}

// compartmentChunk finds the resources that mention one of chunk's
// leavers and whose Patient references all name leavers (gone).
func compartmentChunk(ctx context.Context, q sinks.Querier, namespace string, chunk []string, gone map[string]bool) ([]transform.Key, error) {
	args := []any{namespace}
	var like []string
	for _, p := range chunk {
		args = append(args, `%Patient/`+p+`"%`)
		like = append(like, fmt.Sprintf("CAST(resource AS VARCHAR) LIKE $%d", len(args)))
	}
	rows, err := q.Query(ctx, `SELECT resource_type, id, CAST(resource AS VARCHAR) FROM `+schemas.RawTable+`
		WHERE namespace = $1 AND resource_type <> 'Patient' AND (`+strings.Join(like, " OR ")+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []transform.Key
	for rows.Next() {
		var typ, id, res string
		if err := rows.Scan(&typ, &id, &res); err != nil {
			return nil, err
		}
		if transform.Shared(typ) {
			continue
		}
		refs, err := transform.PatientRefs([]byte(res))
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", typ, id, err)
		}
		if len(refs) > 0 && !slices.ContainsFunc(refs, func(p string) bool { return !gone[p] }) {
			out = append(out, transform.Key{Type: typ, ID: id})
		}
	}
	return out, rows.Err()
}
