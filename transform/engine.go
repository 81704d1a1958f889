// Package transform turns exported NDJSON into Arrow record batches: one
// parse per line, then the raw landing row and the rows of every view of the
// resource's type, plus rejects, deleted entries and OperationOutcome issues.
package transform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/schemas/mempool"
	"github.com/fhirferry/fhirferry/transform/view"
)

// ViewRunner is a compiled SQL-on-FHIR view (transform/view.View).
type ViewRunner interface {
	// ArrowSchema is the schema of the view's own columns.
	ArrowSchema() *arrow.Schema
	// AppendRows appends the rows of res to b's fields from off on, calling
	// onRow before each row so the caller fills the leading columns.
	AppendRows(res *fastjson.Value, b *array.RecordBuilder, off int, onRow func()) (int, error)
}

// View is a view the engine evaluates, with the table it writes to.
type View struct {
	Name        string
	Resource    string
	Description string
	Runner      ViewRunner
}

// Options configures an Engine.
type Options struct {
	Views []View
	// BatchRows and BatchBytes cut record batches, whichever comes first;
	// together with the queue depth they bound the pipeline's memory.
	BatchRows    int
	BatchBytes   int
	MaxLineBytes int
	// Alloc builds the batches. Pass the process's mempool.PoolAllocator:
	// recycled buffers made the transform with the default views a third
	// faster (no page faults on fresh memory). Sinks must keep nothing of a
	// batch after releasing it (see mempool.PoolAllocator). nil gives the
	// engine a pool of its own.
	Alloc memory.Allocator
}

// Engine holds the compiled views and the tables they write. It is safe for
// concurrent use: each ProcessFile call has its own builders and parser.
type Engine struct {
	opts        Options
	tables      []*schemas.Table
	viewsByType map[string][]viewTable
	parsers     sync.Pool
}

type viewTable struct {
	table  *schemas.Table
	runner ViewRunner
	width  int
}

// New builds an engine; view names must be unique and must not clash with
// the system tables.
func New(opts Options) (*Engine, error) {
	if opts.BatchRows <= 0 {
		opts.BatchRows = configs.DefaultBatchRows
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = configs.DefaultBatchBytes
	}
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = configs.DefaultMaxLineBytes
	}
	if opts.Alloc == nil {
		opts.Alloc = mempool.NewPoolAllocator(mempool.DefaultBytes)
	}
	e := &Engine{opts: opts, viewsByType: map[string][]viewTable{}}
	e.tables = append(e.tables, schemas.System()...)
	seen := map[string]bool{}
	for _, t := range e.tables {
		seen[t.Name] = true
	}
	for _, v := range opts.Views {
		if seen[v.Name] {
			return nil, fmt.Errorf("view %q: a table of that name already exists", v.Name)
		}
		seen[v.Name] = true
		vs := v.Runner.ArrowSchema()
		fields := append([]arrow.Field{
			{Name: schemas.ColResourceID, Type: arrow.BinaryTypes.String, Metadata: schemas.KeyMetadata},
			{Name: schemas.ColSeq, Type: arrow.PrimitiveTypes.Int64},
		}, vs.Fields()...)
		if cr, ok := v.Runner.(interface{ Columns() []view.Column }); ok {
			byName := make(map[string]int, len(fields))
			for i, f := range fields {
				byName[f.Name] = i
			}
			for _, col := range cr.Columns() {
				i, ok := byName[col.Name]
				if !ok {
					continue
				}
				f := &fields[i]
				if col.PrecisionOf == "" && strings.TrimSpace(col.Path) == "getResourceKey()" && f.Type.ID() == arrow.STRING {
					f.Metadata = withKey(f.Metadata)
				}
				f.Metadata = schemas.Describe(f.Metadata, col.Description)
			}
		}
		t := &schemas.Table{
			Name: v.Name, Kind: schemas.KindView, ResourceType: v.Resource,
			Schema: arrow.NewSchema(fields, nil), Description: v.Description,
		}
		e.tables = append(e.tables, t)
		e.viewsByType[v.Resource] = append(e.viewsByType[v.Resource], viewTable{table: t, runner: v.Runner, width: len(vs.Fields())})
	}
	return e, nil
}

// withKey adds schemas.KeyMetadata to md.
func withKey(md arrow.Metadata) arrow.Metadata {
	return arrow.NewMetadata(append(md.Keys(), schemas.KeyMetadata.Keys()...), append(md.Values(), schemas.KeyMetadata.Values()...))
}

// Tables returns every table the engine writes, system tables first.
func (e *Engine) Tables() []*schemas.Table { return e.tables }

// ProcessFile streams one file into batches passed to emit. emit may block
// (backpressure) and takes ownership of each batch. Bad lines become reject
// rows; only I/O errors, ctx and emit errors end the file early.
func (e *Engine) ProcessFile(ctx context.Context, origin Origin, in Input, emit func(schemas.Batch) error) (FileStats, error) {
	rc, err := Open(in.Path)
	if err != nil {
		return FileStats{}, err
	}
	defer rc.Close()
	return e.Process(ctx, origin, in, rc, emit)
}

// Process is ProcessFile over an open reader of plain NDJSON.
func (e *Engine) Process(ctx context.Context, origin Origin, in Input, r io.Reader, emit func(schemas.Batch) error) (st FileStats, err error) {
	p, _ := e.parsers.Get().(*fastjson.Parser)
	if p == nil {
		p = &fastjson.Parser{}
	}
	defer e.parsers.Put(p)
	fp := &fileProc{e: e, origin: origin, in: in, emit: emit, builders: map[*schemas.Table]*tableBuilder{}}
	defer fp.release()
	lr := NewLineReader(r, e.opts.MaxLineBytes)
	for {
		if st.Lines%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		line, n, rerr := lr.Next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if errors.Is(rerr, ErrLineTooLong) {
			st.Lines++
			if err := fp.reject(&st, n, "", "", fmt.Sprintf("line longer than max_line_bytes (%d)", e.opts.MaxLineBytes), nil); err != nil {
				return st, err
			}
			continue
		}
		if rerr != nil {
			return st, fmt.Errorf("%s: %w", in.Name, rerr)
		}
		st.Lines++
		st.Bytes += int64(len(line)) + 1
		v, perr := p.ParseBytes(line)
		if perr != nil {
			err = fp.reject(&st, n, "", "", "malformed JSON: "+perr.Error(), line)
		} else {
			switch in.Kind {
			case "deleted":
				err = fp.deleted(&st, n, v, line)
			case "error":
				err = fp.outcome(&st, n, v, line)
			default:
				err = fp.resource(&st, n, v, line)
			}
		}
		if err != nil {
			return st, err
		}
	}
	return st, fp.flushAll()
}

type fileProc struct {
	e        *Engine
	origin   Origin
	in       Input
	emit     func(schemas.Batch) error
	builders map[*schemas.Table]*tableBuilder
	order    []*tableBuilder
}

type tableBuilder struct {
	t     *schemas.Table
	b     *array.RecordBuilder
	bytes int
	// big is the raw landing's JSON column once a batch was cut by size:
	// each later batch reserves its data buffer up front, instead of
	// growing it by doubling (a copy and a zeroing of every step, which
	// profiled at 15% of a load's CPU).
	big *array.StringBuilder
}

func (fp *fileProc) builder(t *schemas.Table) *tableBuilder {
	tb := fp.builders[t]
	if tb == nil {
		tb = &tableBuilder{t: t, b: array.NewRecordBuilder(fp.e.opts.Alloc, t.Schema)}
		fp.builders[t] = tb
		fp.order = append(fp.order, tb)
	}
	return tb
}

func (tb *tableBuilder) rows() int { return tb.b.Field(0).Len() }

// emitRows emits the builder's first n rows and drops the rest (the rows of
// a resource whose view failed half-way).
func (fp *fileProc) emitRows(tb *tableBuilder, n int) error {
	rec := tb.b.NewRecordBatch()
	tb.bytes = 0
	if int(rec.NumRows()) != n {
		sl := rec.NewSlice(0, int64(n))
		rec.Release()
		rec = sl
	}
	if n == 0 {
		rec.Release()
		return nil
	}
	return fp.emit(schemas.Batch{Table: tb.t, Rec: rec, Namespace: fp.origin.Namespace, Source: fp.origin.Source})
}

func (fp *fileProc) maybeFlush(tb *tableBuilder) error {
	n := tb.rows()
	full := tb.bytes >= fp.e.opts.BatchBytes
	if n < fp.e.opts.BatchRows && !full {
		return nil
	}
	if err := fp.emitRows(tb, n); err != nil {
		return err
	}
	if full && tb.t == schemas.Raw {
		tb.big = tb.b.Field(rawJSONCol).(*array.StringBuilder)
	}
	if tb.big != nil {
		tb.big.ReserveData(fp.e.opts.BatchBytes + fp.e.opts.BatchBytes/4)
	}
	return nil
}

func (fp *fileProc) flushAll() error {
	for _, tb := range fp.order {
		if n := tb.rows(); n > 0 {
			if err := fp.emitRows(tb, n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (fp *fileProc) release() {
	for _, tb := range fp.order {
		tb.b.Release()
	}
}

// appendProvenance fills the provenance columns, which every non-view
// system table ends with, starting at column i.
func (fp *fileProc) appendProvenance(b *array.RecordBuilder, i int, line int64) {
	appendProvenance(b, i, fp.origin, fp.in.Name, line)
}

// appendProvenance fills the provenance columns from field i on.
func appendProvenance(b *array.RecordBuilder, i int, o Origin, file string, line int64) {
	b.Field(i).(*array.StringBuilder).Append(o.Source)
	b.Field(i + 1).(*array.StringBuilder).Append(o.ExportID)
	b.Field(i + 2).(*array.StringBuilder).Append(o.TransactionTime)
	b.Field(i + 3).(*array.StringBuilder).Append(file)
	b.Field(i + 4).(*array.Int64Builder).Append(line)
}

const maxRejectContent = 64 << 10

func appendOpt(b array.Builder, s string) {
	if s == "" {
		b.AppendNull()
		return
	}
	b.(*array.StringBuilder).Append(s)
}

func (fp *fileProc) reject(st *FileStats, line int64, typ, id, reason string, content []byte) error {
	st.Rejects++
	tb := fp.builder(schemas.Rejects)
	b := tb.b
	appendOpt(b.Field(0), typ)
	appendOpt(b.Field(1), id)
	b.Field(2).(*array.StringBuilder).Append(reason)
	if len(content) > maxRejectContent {
		content = content[:maxRejectContent]
	}
	if content == nil {
		b.Field(3).AppendNull()
	} else {
		b.Field(3).(*array.StringBuilder).Append(strings.ToValidUTF8(string(content), "\uFFFD"))
	}
	fp.appendProvenance(b, 4, line)
	tb.bytes += len(content) + len(reason)
	return fp.maybeFlush(tb)
}

func (fp *fileProc) seq(line int64) int64 { return int64(fp.in.Index)<<32 | (line & 0xffffffff) }

// resource lands one resource line and evaluates the views of its type.
func (fp *fileProc) resource(st *FileStats, line int64, v *fastjson.Value, raw []byte) error {
	if v.Type() != fastjson.TypeObject {
		return fp.reject(st, line, "", "", "line is not a JSON object", raw)
	}
	typ := string(v.GetStringBytes("resourceType"))
	id := string(v.GetStringBytes("id"))
	if typ == "Parameters" && fp.in.Type == "" {
		return nil // an organizeOutputBy block header, not a resource
	}
	switch {
	case typ == "":
		return fp.reject(st, line, "", id, "missing resourceType", raw)
	case fp.in.Type != "" && typ != fp.in.Type:
		return fp.reject(st, line, typ, id, fmt.Sprintf("resourceType %s does not match the file's type %s", typ, fp.in.Type), raw)
	case id == "":
		return fp.reject(st, line, typ, "", "missing id", raw)
	}
	var lastUpdated time.Time
	if lu := v.GetStringBytes("meta", "lastUpdated"); lu != nil {
		t, err := time.Parse(time.RFC3339Nano, string(lu))
		if err != nil {
			return fp.reject(st, line, typ, id, fmt.Sprintf("meta.lastUpdated %q is not an instant", lu), raw)
		}
		lastUpdated = t
	}
	seq := fp.seq(line)
	tb := fp.builder(schemas.Raw)
	b := tb.b
	b.Field(0).(*array.StringBuilder).Append(typ)
	b.Field(1).(*array.StringBuilder).Append(id)
	appendOpt(b.Field(2), string(v.GetStringBytes("meta", "versionId")))
	if lastUpdated.IsZero() {
		b.Field(3).AppendNull()
	} else {
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(lastUpdated.UnixMicro()))
	}
	b.Field(4).(*array.BooleanBuilder).Append(isSubsetted(v))
	b.Field(rawJSONCol).(*array.StringBuilder).BinaryBuilder.Append(raw)
	b.Field(6).(*array.Int64Builder).Append(seq)
	fp.appendProvenance(b, 7, line)
	tb.bytes += len(raw)
	st.Resources++
	if err := fp.maybeFlush(tb); err != nil {
		return err
	}
	for _, vt := range fp.e.viewsByType[typ] {
		if err := fp.view(st, vt, v, typ, id, seq, line); err != nil {
			return err
		}
	}
	return nil
}

func (fp *fileProc) view(st *FileStats, vt viewTable, v *fastjson.Value, typ, id string, seq, line int64) error {
	tb := fp.builder(vt.table)
	b := tb.b
	before := tb.rows()
	idb := b.Field(0).(*array.StringBuilder)
	seqb := b.Field(1).(*array.Int64Builder)
	_, err := vt.runner.AppendRows(v, b, 2, func() {
		idb.Append(id)
		seqb.Append(seq)
	})
	if err != nil {
		// The resource stays in the raw landing; its rows in this view are
		// dropped and the reason recorded, so the rest of the file loads.
		if ferr := fp.emitRows(tb, before); ferr != nil {
			return ferr
		}
		return fp.reject(st, line, typ, id, fmt.Sprintf("view %s: %v", vt.table.Name, err), nil)
	}
	tb.bytes += (tb.rows() - before) * 16 * (vt.width + 1)
	return fp.maybeFlush(tb)
}

// rawJSONCol is the position of the resource JSON in schemas.Raw.
const rawJSONCol = 5

var subsettedCode = []byte("SUBSETTED")

func isSubsetted(v *fastjson.Value) bool {
	for _, t := range v.GetArray("meta", "tag") {
		if bytes.Equal(t.GetStringBytes("code"), subsettedCode) {
			return true
		}
	}
	return false
}

// deleted reads one line of a `deleted` file: a transaction Bundle whose
// entries DELETE Type/id.
func (fp *fileProc) deleted(st *FileStats, line int64, v *fastjson.Value, raw []byte) error {
	if string(v.GetStringBytes("resourceType")) != "Bundle" {
		return fp.reject(st, line, string(v.GetStringBytes("resourceType")), "", "deleted file line is not a Bundle", raw)
	}
	entries := v.GetArray("entry")
	for i, e := range entries {
		method := strings.ToUpper(string(e.GetStringBytes("request", "method")))
		typ, id, ok := refKey(string(e.GetStringBytes("request", "url")))
		if method != "DELETE" || !ok {
			if err := fp.reject(st, line, "", "", fmt.Sprintf("entry[%d]: not a DELETE of Type/id", i), raw); err != nil {
				return err
			}
			continue
		}
		tb := fp.builder(schemas.Deleted)
		tb.b.Field(0).(*array.StringBuilder).Append(typ)
		tb.b.Field(1).(*array.StringBuilder).Append(id)
		fp.appendProvenance(tb.b, 2, line)
		st.Deleted++
		if st.DeletedByType == nil {
			st.DeletedByType = map[string]int64{}
		}
		st.DeletedByType[typ]++
		if err := fp.maybeFlush(tb); err != nil {
			return err
		}
	}
	return nil
}

// refKey reduces a relative or absolute reference (with an optional
// _history suffix) to its type and id.
func refKey(ref string) (typ, id string, ok bool) {
	ref, _, _ = strings.Cut(ref, "?")
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(strings.TrimRight(ref, "/"), "/")
	if len(parts) < 2 {
		return "", "", false
	}
	typ, id = parts[len(parts)-2], parts[len(parts)-1]
	if typ == "" || id == "" || typ[0] < 'A' || typ[0] > 'Z' {
		return "", "", false
	}
	return typ, id, true
}

// outcome records the issues of one OperationOutcome line of an error file.
func (fp *fileProc) outcome(st *FileStats, line int64, v *fastjson.Value, raw []byte) error {
	if string(v.GetStringBytes("resourceType")) != "OperationOutcome" {
		return fp.reject(st, line, string(v.GetStringBytes("resourceType")), "", "error file line is not an OperationOutcome", raw)
	}
	for _, is := range v.GetArray("issue") {
		sev := string(is.GetStringBytes("severity"))
		diag := string(is.GetStringBytes("diagnostics"))
		details := string(is.GetStringBytes("details", "text"))
		tb := fp.builder(schemas.Outcomes)
		b := tb.b
		appendOpt(b.Field(0), sev)
		appendOpt(b.Field(1), string(is.GetStringBytes("code")))
		appendOpt(b.Field(2), diag)
		appendOpt(b.Field(3), details)
		fp.appendProvenance(b, 4, line)
		st.Outcomes++
		if sev == "error" || sev == "fatal" {
			st.ErrorIssues++
			if st.FirstIssue == "" {
				st.FirstIssue = strings.TrimSpace(sev + ": " + firstNonEmpty(diag, details, string(is.GetStringBytes("code"))))
			}
		}
		if err := fp.maybeFlush(tb); err != nil {
			return err
		}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// TableNames lists table names, sorted, for messages.
func TableNames(ts []*schemas.Table) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Name)
	}
	sort.Strings(out)
	return out
}
