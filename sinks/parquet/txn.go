package parquet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/txnguard"
)

// entry is what a run knows about one resource key.
type entry struct {
	// The run's pick among its rows of the key: greatest (last_updated, _seq).
	staged bool
	seq    int64
	lu     int64
	luOK   bool
	sub    bool
	// deleted is set when the run's deleted list names the key.
	deleted bool
	// The stored raw row, if any.
	stored bool
	sLU    int64
	sLUOK  bool
	sSub   bool
	// Decisions: won = the run's row is written; gone = removed by a delete.
	won, gone bool
}

func (e *entry) affected() bool { return e.won || e.gone }

// keyIndex maps resource type → id → entry; two levels so lookups by the
// strings of an Arrow column need no allocation.
type keyIndex map[string]map[string]*entry

func (k keyIndex) get(rt, id string) *entry { return k[rt][id] }

func (k keyIndex) put(rt, id string) *entry {
	m := k[rt]
	if m == nil {
		m = map[string]*entry{}
		k[strings.Clone(rt)] = m
	}
	e := m[id]
	if e == nil {
		e = &entry{}
		m[strings.Clone(id)] = e
	}
	return e
}

// Txn is one run's write to the lake. Rows are staged in Parquet files under
// _staging/<tag>/ (appended tables straight under their table folder); the
// run's keys are indexed in memory. Nothing is visible before Commit renames
// the new _lake.json into place.
type Txn struct {
	s              *Sink
	run            sinks.RunInfo
	tag            string
	keys           keyIndex
	stages         map[string]*fileSet
	txnguard.Guard // Done, Noop and the first write error (Err), after which the run cannot commit
}

var _ sinks.Txn = (*Txn)(nil)

// Begin implements sinks.Sink.
func (s *Sink) Begin(ctx context.Context, run sinks.RunInfo) (sinks.Txn, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.meta.Tables[schemas.RawTable]; !ok {
		if err := s.prepare(ctx, nil); err != nil {
			s.release()
			return nil, err
		}
	}
	t := &Txn{s: s, run: run, tag: newTag(run.RunID), keys: keyIndex{}, stages: map[string]*fileSet{}}
	if cp, ok := s.meta.Checkpoints[run.Source]; ok && run.ExportID != "" && cp.ExportID == run.ExportID {
		t.Noop = true
		s.log.Info("export already held; run is a no-op", "source", run.Source)
	}
	return t, nil
}

// Write implements sinks.Txn.
func (t *Txn) Write(ctx context.Context, b schemas.Batch) error {
	return t.Guard.Write(ctx, "parquet sink "+t.s.name, b, t.write)
}

func (t *Txn) write(ctx context.Context, b schemas.Batch) error {
	tbl := t.s.tables.Get(b.Table.Name)
	if tbl == nil {
		return fmt.Errorf("table %s was not prepared", b.Table.Name)
	}
	rec := b.Rec
	switch tbl.Kind {
	case schemas.KindDeleted:
		rt, id := strCol(rec, "resource_type"), strCol(rec, "id")
		if rt == nil || id == nil {
			return errors.New("batch lacks resource_type or id")
		}
		for i := range rec.NumRows() {
			t.keys.put(rt.Value(int(i)), id.Value(int(i))).deleted = true
		}
		return nil
	case schemas.KindRaw:
		if err := t.index(rec); err != nil {
			return err
		}
	}
	fs := t.stages[tbl.Name]
	if fs == nil {
		sc, prefix := tbl.Schema, stagingDir+t.tag+"/"+tbl.Name
		if tbl.Kind == schemas.KindAppend {
			// Appended rows need no merge: write them where they will live.
			sc, prefix = arrow.NewSchema(tbl.StoredFields(), nil), tbl.Name+"/"+t.tag
		}
		fs = newFileSet(context.WithoutCancel(ctx), t.s.st, t.s.mem, t.s.comp, sc, prefix)
		t.stages[tbl.Name] = fs
	}
	c, err := conform(t.s.mem, rec, fs.schema, runStamp(t.run))
	if err != nil {
		return err
	}
	defer c.Release()
	if err := fs.write(c); err != nil {
		return err
	}
	return t.holdWithin()
}

// holdWithin keeps the Arrow bytes the run's tables hold together within
// the sink's staging budget. Each table alone would hold up to
// rowGroupBytes for its next row group, plus its last one for the
// statistics (rowgroup.Batches.Written), which with dozens of view tables
// is far more than any budget. Over it, the table holding the most frees
// it: it writes its row group early when that is the larger part, or else
// finishes its file (which drops the last group), so row groups stay as
// large as the budget allows.
func (t *Txn) holdWithin() error {
	for range len(t.stages) {
		var total int64
		var big *fileSet
		for _, fs := range t.stages {
			total += fs.group.Held()
			if big == nil || fs.group.Held() > big.group.Held() {
				big = fs
			}
		}
		if total <= t.s.staging || big == nil || big.group.Held() == 0 {
			return nil
		}
		var err error
		if big.group.Bytes > big.group.Written {
			err = big.flushGroup()
		} else {
			err = big.finish()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// index records the run's pick per key: the row with the greatest
// (last_updated, _seq), a NULL last_updated sorting lowest.
func (t *Txn) index(rec arrow.RecordBatch) error {
	rt, id, seq := strCol(rec, "resource_type"), strCol(rec, "id"), int64Col(rec, schemas.ColSeq)
	var lu *array.Timestamp
	if i := rec.Schema().FieldIndices("last_updated"); len(i) > 0 {
		lu, _ = rec.Column(i[0]).(*array.Timestamp)
	}
	var sub *array.Boolean
	if i := rec.Schema().FieldIndices("subsetted"); len(i) > 0 {
		sub, _ = rec.Column(i[0]).(*array.Boolean)
	}
	if rt == nil || id == nil || seq == nil || lu == nil || sub == nil {
		return errors.New("raw batch lacks resource_type, id, last_updated, subsetted or _seq")
	}
	for i := range int(rec.NumRows()) {
		e := t.keys.put(rt.Value(i), id.Value(i))
		luOK := lu.IsValid(i)
		var v int64
		if luOK {
			v = int64(lu.Value(i))
		}
		s := seq.Value(i)
		better := !e.staged ||
			(luOK && !e.luOK) ||
			(luOK == e.luOK && (v > e.lu || (v == e.lu && s > e.seq)))
		if better {
			e.staged, e.seq, e.lu, e.luOK, e.sub = true, s, v, luOK, sub.Value(i)
		}
	}
	return nil
}

// Commit implements sinks.Txn. On failure everything the run wrote is
// deleted and the published state is untouched; Rollback is then a no-op.
func (t *Txn) Commit(ctx context.Context, sum sinks.RunSummary) error {
	if t.Done {
		return sinks.ErrTxnDone
	}
	err := t.Err
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = t.commit(ctx, sum)
	}
	if err != nil {
		_ = t.Rollback(context.WithoutCancel(ctx))
		if t.Err == nil {
			err = fmt.Errorf("parquet sink %s: commit: %w", t.s.name, err)
		}
		return err
	}
	return nil
}

func (t *Txn) commit(ctx context.Context, sum sinks.RunSummary) error {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meta.clone()
	var written []string
	files := map[string][]fileMeta{}
	for name, fs := range t.stages {
		f, err := fs.close()
		if err != nil {
			return err
		}
		files[name] = f
		written = append(written, paths(f)...)
	}
	fail := func(err error) error {
		s.deleteAll(ctx, written)
		return err
	}
	if !t.Noop {
		out, err := t.apply(ctx, m, files)
		written = append(written, out...)
		if err != nil {
			return fail(err)
		}
	}
	r := t.run
	finished := sum.Finished
	if finished.IsZero() {
		finished = time.Now().UTC()
	}
	m.Runs = append(m.Runs, runRecord{RunID: r.RunID, Source: r.Source, ExportID: r.ExportID, Since: r.Since,
		TransactionTime: r.TransactionTime, StartedAt: r.Started, FinishedAt: finished, Outcome: sum.Outcome,
		Files: sum.Files, Bytes: sum.Bytes, Resources: sum.Resources, Deleted: sum.Deleted, Rejects: sum.Rejects, Outcomes: sum.Outcomes,
		Membership: sum.MembersFrom, Purged: sum.Purged})
	if !t.Noop && sum.Membership != nil {
		m.applyMembers(r, sum.Membership)
	}
	if !t.Noop {
		m.Checkpoints[r.Source] = checkpoint{TransactionTime: r.TransactionTime, ExportID: r.ExportID, CommittedAt: time.Now().UTC()}
	}
	m.Version++
	if err := publish(ctx, s.st, m, t.tag); err != nil {
		return fail(err)
	}
	t.Done = true
	s.release()
	s.published(ctx, m, t.tag)
	return nil
}

// apply merges the run into m's tables: appends, the raw upsert and
// deletes, then each view's replacement. It returns the files it wrote.
func (t *Txn) apply(ctx context.Context, m *lakeMeta, files map[string][]fileMeta) ([]string, error) {
	var written []string
	for name, f := range files {
		tbl := t.s.tables.Get(name)
		if tbl.Kind == schemas.KindAppend {
			m.Tables[name].Files = append(m.Tables[name].Files, f...)
		}
	}
	if len(t.keys) == 0 {
		return nil, nil
	}
	raw := m.Tables[schemas.RawTable]
	if err := t.resolve(ctx, raw); err != nil {
		return nil, err
	}
	stagedFiles := func(name string) []string { return paths(files[name]) }
	merge := func(tbl *schemas.Table, mg *merger) error {
		mg.s, mg.ctx, mg.tag, mg.t, mg.tm = t.s, ctx, t.tag, tbl, m.Tables[tbl.Name]
		if mg.tm == nil {
			return fmt.Errorf("table %s was not prepared", tbl.Name)
		}
		err := mg.run()
		written = append(written, mg.out...)
		return err
	}
	rawT := t.s.tables.Get(schemas.RawTable)
	ns := t.run.Namespace
	if err := merge(rawT, &merger{
		keyCols: []string{schemas.ColNamespace, "resource_type", "id"},
		affected: func(rec arrow.RecordBatch) func(int) bool {
			nsc, rt, id := strCol(rec, schemas.ColNamespace), strCol(rec, "resource_type"), strCol(rec, "id")
			return func(i int) bool {
				if nsc.Value(i) != ns {
					return false // another server's resource, however alike its key
				}
				e := t.keys.get(rt.Value(i), id.Value(i))
				return e != nil && e.affected()
			}
		},
		staged: stagedFiles(schemas.RawTable),
		keep:   t.keepRows("resource_type", "", "id"),
		stamp:  runStamp(t.run),
	}); err != nil {
		return written, err
	}
	for _, v := range t.s.tables.All() {
		if v.Kind != schemas.KindView {
			continue
		}
		rt := v.ResourceType
		ids := t.keys[rt]
		touched := false
		for _, e := range ids {
			touched = touched || e.affected()
		}
		if !touched {
			continue
		}
		if err := merge(v, &merger{
			keyCols: []string{schemas.ColNamespace, schemas.ColResourceID},
			affected: func(rec arrow.RecordBatch) func(int) bool {
				nsc, id := strCol(rec, schemas.ColNamespace), strCol(rec, schemas.ColResourceID)
				return func(i int) bool {
					if nsc.Value(i) != ns {
						return false
					}
					e := ids[id.Value(i)]
					return e != nil && e.affected()
				}
			},
			staged: stagedFiles(v.Name),
			keep:   t.keepRows("", rt, schemas.ColResourceID),
			stamp:  runStamp(t.run),
		}); err != nil {
			return written, err
		}
	}
	return written, nil
}

// keepRows selects staged rows of winning versions: those whose key won
// and whose _seq is the winner's. The type comes from typeCol, or is rt.
func (t *Txn) keepRows(typeCol, rt, idCol string) func(rec arrow.RecordBatch) func(int) bool {
	return func(rec arrow.RecordBatch) func(int) bool {
		id, seq := strCol(rec, idCol), int64Col(rec, schemas.ColSeq)
		var types *array.String
		if typeCol != "" {
			types = strCol(rec, typeCol)
		}
		return func(i int) bool {
			if id.IsNull(i) {
				return false
			}
			typ := rt
			if types != nil {
				typ = types.Value(i)
			}
			e := t.keys.get(typ, id.Value(i))
			return e != nil && e.won && e.seq == seq.Value(i)
		}
	}
}

// resolve reads the stored raw rows of the run's keys and decides, per key,
// whether the run's row wins (lastUpdated and SUBSETTED guards) and whether
// a delete removes the resource (unless it is newer than the export).
func (t *Txn) resolve(ctx context.Context, raw *tableMeta) error {
	for _, f := range raw.Files {
		cols := []string{schemas.ColNamespace, "resource_type", "id", "last_updated", "subsetted"}
		err := scan(ctx, t.s.st, t.s.mem, f.Path, cols, func(rec arrow.RecordBatch) error {
			ns, rt, id := strCol(rec, schemas.ColNamespace), strCol(rec, "resource_type"), strCol(rec, "id")
			lu, _ := rec.Column(3).(*array.Timestamp)
			sub, _ := rec.Column(4).(*array.Boolean)
			if ns == nil || rt == nil || id == nil || lu == nil || sub == nil {
				return fmt.Errorf("%s: unexpected raw column types", f.Path)
			}
			for i := range int(rec.NumRows()) {
				if ns.Value(i) != t.run.Namespace {
					continue
				}
				if e := t.keys.get(rt.Value(i), id.Value(i)); e != nil {
					e.stored, e.sLUOK, e.sSub = true, lu.IsValid(i), sub.Value(i)
					e.sLU = int64(lu.Value(i))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	var tt int64
	var ttErr error
	if ts, err := time.Parse(time.RFC3339Nano, t.run.TransactionTime); err == nil {
		tt = ts.UnixMicro()
	} else {
		ttErr = fmt.Errorf("deletes: run transaction_time %q is not an instant", t.run.TransactionTime)
	}
	for _, ids := range t.keys {
		for _, e := range ids {
			if e.staged {
				older := e.stored && e.sLUOK && e.luOK && e.sLU > e.lu
				subsetOverFull := e.stored && e.sub && !e.sSub
				e.won = !older && !subsetOverFull
			}
			if !e.deleted {
				continue
			}
			if ttErr != nil {
				return ttErr
			}
			// The row after the upsert is the run's if it won, else the stored one.
			exists, luOK, lu := e.stored, e.sLUOK, e.sLU
			if e.won {
				exists, luOK, lu = true, e.luOK, e.lu
			}
			if exists && luOK && lu > tt {
				continue // a version newer than the export is stored
			}
			e.won, e.gone = false, true
		}
	}
	return nil
}

// Rollback implements sinks.Txn: the run's files are deleted.
func (t *Txn) Rollback(ctx context.Context) error {
	if t.Done {
		return nil
	}
	t.Done = true
	for _, fs := range t.stages {
		t.s.deleteAll(ctx, paths(fs.abort()))
	}
	t.s.release()
	t.s.collect(context.WithoutCancel(ctx), t.s.liveSnapshot(), t.tag)
	return nil
}

func (s *Sink) liveSnapshot() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta.liveFiles()
}
