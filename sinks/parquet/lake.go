package parquet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// Names of the lake's own objects.
const (
	lakeFile   = "_lake.json"
	viewsFile  = "views.sql"
	stagingDir = "_staging/"
)

// lakeMeta is _lake.json: the one object that says what the lake holds.
// Readers read only the files it lists.
type lakeMeta struct {
	Version int64 `json:"version"`
	// SchemaVersion is sinks.SchemaVersion of the tables' shape; absent in
	// lakes written before namespaces (version 1).
	SchemaVersion int                   `json:"schema_version,omitempty"`
	Checkpoints   map[string]checkpoint `json:"checkpoints"`
	Runs          []runRecord           `json:"runs"`
	Tables        map[string]*tableMeta `json:"tables"`
	// Members is the group_member table (sinks.Membership): small beside
	// the data (a row per stay of a patient in a Group), and changed in
	// place at every run, so it lives here rather than in files.
	Members []memberRow `json:"group_member,omitempty"`
}

// memberRow is one stay of a patient in a Group.
type memberRow struct {
	Namespace string     `json:"namespace"`
	Source    string     `json:"source"`
	GroupID   string     `json:"group_id"`
	PatientID string     `json:"patient_id"`
	JoinedAt  time.Time  `json:"joined_at"`
	LeftAt    *time.Time `json:"left_at"`
	JoinedRun string     `json:"joined_run"`
	LeftRun   *string    `json:"left_run"`
}

// memberColumns types memberRow for DuckDB's read_json.
const memberColumns = `STRUCT(namespace VARCHAR, source VARCHAR, group_id VARCHAR, patient_id VARCHAR,
	joined_at TIMESTAMPTZ, left_at TIMESTAMPTZ, joined_run VARCHAR, left_run VARCHAR)[]`

// runColumns types runRecord for DuckDB's read_json.
const runColumns = `STRUCT(run_id VARCHAR, source VARCHAR, export_id VARCHAR, since VARCHAR,
	transaction_time VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, outcome VARCHAR, files BIGINT,
	bytes BIGINT, resources BIGINT, deleted BIGINT, rejects BIGINT, outcomes BIGINT, membership VARCHAR, purged BIGINT)[]`

// applyMembers applies a run's Group membership to m.Members: the open
// stays of patients no longer listed close, listed patients without an
// open stay get one. Closed stays are history and never change.
func (m *lakeMeta) applyMembers(run sinks.RunInfo, g *sinks.Membership) {
	listed := make(map[string]bool, len(g.Patients))
	for _, p := range g.Patients {
		listed[p] = true
	}
	at := g.At.UTC()
	open := map[string]bool{}
	for i := range m.Members {
		r := &m.Members[i]
		if r.LeftAt != nil || r.Namespace != run.Namespace || r.Source != run.Source || r.GroupID != g.Group {
			continue
		}
		if listed[r.PatientID] {
			open[r.PatientID] = true
			continue
		}
		r.LeftAt, r.LeftRun = &at, &run.RunID
	}
	for _, p := range g.Patients {
		if !open[p] {
			open[p] = true
			m.Members = append(m.Members, memberRow{Namespace: run.Namespace, Source: run.Source, GroupID: g.Group,
				PatientID: p, JoinedAt: at, JoinedRun: run.RunID})
		}
	}
}

type checkpoint struct {
	TransactionTime string    `json:"transaction_time"` // verbatim
	ExportID        string    `json:"export_id"`
	CommittedAt     time.Time `json:"committed_at"`
}

type runRecord struct {
	RunID           string    `json:"run_id"`
	Source          string    `json:"source"`
	ExportID        string    `json:"export_id"`
	Since           string    `json:"since"`
	TransactionTime string    `json:"transaction_time"`
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
	Outcome         string    `json:"outcome"`
	Files           int64     `json:"files"`
	Bytes           int64     `json:"bytes"`
	Resources       int64     `json:"resources"`
	Deleted         int64     `json:"deleted"`
	Rejects         int64     `json:"rejects"`
	Outcomes        int64     `json:"outcomes"`
	// Membership is how a Group source's run learnt its members.
	Membership string `json:"membership,omitempty"`
	// Purged counts the former members' resources the run removed.
	Purged int64 `json:"purged,omitempty"`
}

type tableMeta struct {
	Kind         string       `json:"kind"`
	ResourceType string       `json:"resource_type,omitempty"`
	Columns      []columnMeta `json:"columns"`
	Files        []fileMeta   `json:"files"`
}

type columnMeta struct {
	Name string `json:"name"`
	Type string `json:"type"` // DuckDB type, used for empty tables
}

type fileMeta struct {
	Path string `json:"path"`
	Rows int64  `json:"rows"`
}

// clone copies m so a commit can change it without touching the published state.
func (m *lakeMeta) clone() *lakeMeta {
	c := &lakeMeta{Version: m.Version, SchemaVersion: m.SchemaVersion, Checkpoints: maps.Clone(m.Checkpoints), Runs: slices.Clone(m.Runs),
		Members: slices.Clone(m.Members), Tables: make(map[string]*tableMeta, len(m.Tables))}
	if c.Checkpoints == nil {
		c.Checkpoints = map[string]checkpoint{}
	}
	for k, t := range m.Tables {
		tc := *t
		tc.Columns = slices.Clone(t.Columns)
		tc.Files = slices.Clone(t.Files)
		c.Tables[k] = &tc
	}
	return c
}

// liveFiles is the set of every file the metadata lists.
func (m *lakeMeta) liveFiles() map[string]bool {
	live := map[string]bool{}
	for _, t := range m.Tables {
		for _, f := range t.Files {
			live[f.Path] = true
		}
	}
	return live
}

func loadMeta(ctx context.Context, st Store) (*lakeMeta, error) {
	m := &lakeMeta{Checkpoints: map[string]checkpoint{}, Tables: map[string]*tableMeta{}}
	obj, err := st.Open(ctx, lakeFile)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return nil, fmt.Errorf("%s: %w", lakeFile, err)
	}
	if m.Checkpoints == nil {
		m.Checkpoints = map[string]checkpoint{}
	}
	if m.Tables == nil {
		m.Tables = map[string]*tableMeta{}
	}
	return m, nil
}

// publish makes m the lake's state: it is written under a run-scoped name
// and renamed over _lake.json, the single atomic step of a commit.
func publish(ctx context.Context, st Store, m *lakeMeta, tag string) error {
	data, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	tmp := stagingDir + tag + "/" + lakeFile
	if err := putObject(ctx, st, tmp, data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := st.Rename(ctx, tmp, lakeFile); err != nil {
		_ = st.Delete(context.WithoutCancel(ctx), tmp)
		return fmt.Errorf("publish %s: %w", lakeFile, err)
	}
	return nil
}

func putObject(ctx context.Context, st Store, name string, data []byte) error {
	w, err := st.Create(ctx, name)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// duckType is the DuckDB type Arrow type dt reads as from Parquet.
func duckType(dt arrow.DataType) string {
	switch t := dt.(type) {
	case *arrow.BooleanType:
		return "BOOLEAN"
	case *arrow.Int8Type:
		return "TINYINT"
	case *arrow.Int16Type:
		return "SMALLINT"
	case *arrow.Int32Type:
		return "INTEGER"
	case *arrow.Int64Type:
		return "BIGINT"
	case *arrow.Float32Type:
		return "FLOAT"
	case *arrow.Float64Type:
		return "DOUBLE"
	case *arrow.Date32Type:
		return "DATE"
	case *arrow.Time64Type:
		return "TIME"
	case *arrow.Decimal128Type:
		return fmt.Sprintf("DECIMAL(%d,%d)", t.Precision, t.Scale)
	case *arrow.TimestampType:
		if t.TimeZone != "" {
			return "TIMESTAMP WITH TIME ZONE"
		}
		return "TIMESTAMP"
	case *arrow.BinaryType:
		return "BLOB"
	case *arrow.ListType:
		return duckType(t.Elem()) + "[]"
	}
	return "VARCHAR"
}

func quoteIdent(s string) string  { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// writeViews writes one DuckDB view per table over exactly its live files.
func writeViews(w io.Writer, st Store, m *lakeMeta) error {
	var b strings.Builder
	fmt.Fprintf(&b, "-- Generated by fhirferry for lake version %d. Do not edit: it is rewritten at every commit.\n", m.Version)
	for _, name := range slices.Sorted(maps.Keys(m.Tables)) {
		t := m.Tables[name]
		if len(t.Files) == 0 {
			cols := make([]string, len(t.Columns))
			for i, c := range t.Columns {
				cols[i] = fmt.Sprintf("CAST(NULL AS %s) AS %s", c.Type, quoteIdent(c.Name))
			}
			if len(cols) == 0 {
				cols = []string{"NULL AS _empty"}
			}
			fmt.Fprintf(&b, "CREATE OR REPLACE VIEW %s AS SELECT %s WHERE false;\n", quoteIdent(name), strings.Join(cols, ", "))
			continue
		}
		files := make([]string, len(t.Files))
		for i, f := range t.Files {
			files[i] = quoteString(st.Location(f.Path))
		}
		fmt.Fprintf(&b, "CREATE OR REPLACE VIEW %s AS SELECT * FROM read_parquet([%s], union_by_name = true);\n",
			quoteIdent(name), strings.Join(files, ", "))
	}
	// runs, group_member and current_member read _lake.json itself: the
	// typed columns give an empty table its shape, as in the other sinks.
	for _, v := range []struct{ name, key, cols string }{
		{schemas.RunsTable, "runs", runColumns},
		{schemas.GroupMemberTable, "group_member", memberColumns},
	} {
		fmt.Fprintf(&b, `CREATE OR REPLACE VIEW %s AS SELECT unnest(%s, recursive := true) FROM read_json(%s,
	columns = {%s: '%s'}, maximum_object_size = 2147483647);
`, quoteIdent(v.name), v.key, quoteString(st.Location(lakeFile)), v.key, v.cols)
	}
	fmt.Fprintf(&b, "CREATE OR REPLACE VIEW %s AS SELECT namespace, source, group_id, patient_id, joined_at, joined_run FROM %s WHERE left_at IS NULL;\n",
		quoteIdent(schemas.CurrentMemberView), quoteIdent(schemas.GroupMemberTable))
	_, err := io.WriteString(w, b.String())
	return err
}
