package transform

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
)

// RebuildStats counts what a rebuild read and wrote.
type RebuildStats struct {
	Resources int64 // raw resources read
	Rows      int64 // view rows emitted
	// Failed counts resources whose view evaluation failed: like a run,
	// the rebuild leaves them without rows (the run recorded the reject).
	Failed int64
}

// ViewTable returns the table of the named view, or nil.
func (e *Engine) ViewTable(name string) *schemas.Table {
	if vt, ok := e.viewTable(name); ok {
		return vt.table
	}
	return nil
}

func (e *Engine) viewTable(name string) (viewTable, bool) {
	for _, vts := range e.viewsByType {
		for _, vt := range vts {
			if vt.table.Name == name {
				return vt, true
			}
		}
	}
	return viewTable{}, false
}

// RebuildView evaluates one view over resources that scan yields (the raw
// landing of a sink, in its order: namespace by namespace) and passes its batches to
// emit, which takes ownership of them. The batches have the same columns
// and rows as a run loading those resources would give; _seq is 0.
func (e *Engine) RebuildView(ctx context.Context, name string, scan func(fn func(schemas.RawResource) error) error, emit func(schemas.Batch) error) error {
	_, err := e.RebuildViewStats(ctx, name, scan, emit)
	return err
}

// RebuildViewStats is [Engine.RebuildView] reporting what it did.
func (e *Engine) RebuildViewStats(ctx context.Context, name string, scan func(fn func(schemas.RawResource) error) error, emit func(schemas.Batch) error) (RebuildStats, error) {
	var rs RebuildStats
	vt, ok := e.viewTable(name)
	if !ok {
		return rs, fmt.Errorf("rebuild: no view named %q", name)
	}
	p, _ := e.parsers.Get().(*fastjson.Parser)
	if p == nil {
		p = &fastjson.Parser{}
	}
	defer e.parsers.Put(p)
	// The view's batches are cut and emitted exactly as in a run; the reject
	// rows a failing resource produces are dropped (the run kept them).
	fp := &fileProc{e: e, builders: map[*schemas.Table]*tableBuilder{}, emit: func(b schemas.Batch) error {
		if b.Table != vt.table {
			b.Release()
			return nil
		}
		rs.Rows += b.Rec.NumRows()
		return emit(b)
	}}
	defer fp.release()
	var st FileStats
	err := scan(func(r schemas.RawResource) error {
		if rs.Resources%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rs.Resources++
		if r.Namespace != fp.origin.Namespace || r.Source != fp.origin.Source {
			// Every batch holds rows of one namespace and source.
			if err := fp.flushAll(); err != nil {
				return err
			}
			fp.origin.Namespace, fp.origin.Source = strings.Clone(r.Namespace), strings.Clone(r.Source)
		}
		v, err := p.ParseBytes(r.JSON)
		if err != nil {
			return fmt.Errorf("rebuild %s: stored %s %s is not JSON: %w", name, vt.table.ResourceType, r.ID, err)
		}
		return fp.view(&st, vt, v, vt.table.ResourceType, r.ID, 0, 0)
	})
	if err == nil {
		err = fp.flushAll()
	}
	rs.Failed = st.Rejects
	return rs, err
}

// ViewHash is the hash of a ViewDefinition: SHA-256 of its canonical JSON
// (keys sorted, no insignificant space), so reformatting a file does not
// count as a change.
func ViewHash(def []byte) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(def))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", err
	}
	c, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

// ViewHashes returns the [ViewHash] of every view LoadViews(defaults, dir)
// loads, by view name.
func ViewHashes(defaults bool, dir string) (map[string]string, error) {
	files, err := schemas.ResolveViews(defaults, dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(files))
	for _, f := range files {
		h, err := ViewHash(f.JSON)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Source, err)
		}
		out[f.Name] = h
	}
	return out, nil
}
