package view

import (
	"fmt"

	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/transform/fhirpath"
)

// state is the scratch space of one evaluation: the FHIRPath context and
// the current row's cells (one FHIRPath result per output column).
type state struct {
	c      *fhirpath.Ctx
	cells  [][]fhirpath.Item
	isNull []bool
	// AppendRows buffers a resource's converted rows here so that a bad
	// value rejects the whole resource without touching the builders.
	rows  []scalar
	elems []scalar
	nrows int
}

func newState(ncols int) *state {
	st := &state{c: fhirpath.NewCtx(), cells: make([][]fhirpath.Item, ncols), isNull: make([]bool, ncols)}
	for i := range st.cells {
		st.cells[i] = make([]fhirpath.Item, 0, 4)
	}
	return st
}

// RowError is a runtime error while evaluating a resource: a where clause
// that is not boolean, several values in a non-collection column, a value
// that does not fit its column. The pipeline records it as a reject.
type RowError struct {
	View   string
	Column string // empty when not tied to a column
	Err    error
}

func (e *RowError) Error() string {
	if e.Column != "" {
		return fmt.Sprintf("view %s: column %s: %v", e.View, e.Column, e.Err)
	}
	return fmt.Sprintf("view %s: %v", e.View, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

func (v *View) rowErr(col string, format string, a ...any) error {
	return &RowError{View: v.label(), Column: col, Err: fmt.Errorf(format, a...)}
}

func (v *View) label() string {
	if v.Name != "" {
		return v.Name
	}
	return v.Resource
}

// run evaluates the view on res, calling emit once per output row with the
// row's cells filled in st.
func (v *View) run(st *state, res *fastjson.Value, emit func() error) error {
	if string(res.GetStringBytes("resourceType")) != v.Resource {
		return nil
	}
	r := fhirpath.Resource(res)
	c := st.c
	c.Reset(r)
	c.SetVar(0, fhirpath.Integer(0))
	focus := c.Buffer()
	defer c.Release(focus)
	focus = append(focus, r)
	for i, w := range v.where {
		buf := c.Buffer()
		buf, err := w.Eval(c, focus, buf)
		if err != nil {
			c.Release(buf)
			return v.rowErr("", "where[%d] %q: %w", i, w.String(), err)
		}
		keep := false
		switch {
		case len(buf) == 0:
		case len(buf) == 1 && buf[0].Kind() == fhirpath.KindBool:
			keep = buf[0].Bool()
		default:
			c.Release(buf)
			return v.rowErr("", "where[%d] %q must yield a boolean, got %d item(s) of %s", i, w.String(), len(buf), buf[0].Kind())
		}
		c.Release(buf)
		if !keep {
			return nil
		}
	}
	return v.process(st, v.root, focus, 0, emit)
}

// process emits the rows of selection s for the node focus[0] (a one-item
// slice), calling k for each. idx is the inherited %rowIndex.
func (v *View) process(st *state, s *selectNode, focus []fhirpath.Item, idx int, k func() error) error {
	if s.iter == iterNone {
		return v.parts(st, s, focus, idx, k)
	}
	c := st.c
	foci := c.Buffer()
	defer func() { c.Release(foci) }()
	var err error
	c.SetVar(0, fhirpath.Integer(int64(idx)))
	if s.iter == iterRepeat {
		foci, err = v.descend(st, s, focus[0], foci, 0)
	} else {
		foci, err = s.iterExpr.Eval(c, focus, foci)
	}
	if err != nil {
		return v.rowErr("", "%s: %w", s.loc, err)
	}
	if len(foci) == 0 {
		if s.iter != iterForEachOrNull {
			return nil
		}
		for i := s.base; i < s.base+s.width; i++ {
			st.cells[i] = st.cells[i][:0]
			st.isNull[i] = true
		}
		for _, i := range s.rowIndexCols {
			st.cells[i] = append(st.cells[i][:0], fhirpath.Integer(0))
			st.isNull[i] = false
		}
		return k()
	}
	for i := range foci {
		if err := v.parts(st, s, foci[i:i+1], i, k); err != nil {
			return err
		}
	}
	return nil
}

// descend collects the repeat foci: depth-first pre-order, root excluded.
func (v *View) descend(st *state, s *selectNode, node fhirpath.Item, dst []fhirpath.Item, depth int) ([]fhirpath.Item, error) {
	if depth >= v.cfg.maxRepeatDepth {
		return dst, fmt.Errorf("repeat deeper than %d levels", v.cfg.maxRepeatDepth)
	}
	c := st.c
	in := c.Buffer()
	in = append(in, node)
	defer c.Release(in)
	for _, e := range s.repeat {
		kids := c.Buffer()
		kids, err := e.Eval(c, in, kids)
		if err != nil {
			c.Release(kids)
			return dst, err
		}
		for _, kid := range kids {
			dst = append(dst, kid)
			if dst, err = v.descend(st, s, kid, dst, depth+1); err != nil {
				c.Release(kids)
				return dst, err
			}
		}
		c.Release(kids)
	}
	return dst, nil
}

// parts evaluates s's columns on focus and cross-joins them with the rows
// of its nested selects and its unionAll.
func (v *View) parts(st *state, s *selectNode, focus []fhirpath.Item, idx int, k func() error) error {
	c := st.c
	if len(s.cols) > 0 {
		c.SetVar(0, fhirpath.Integer(int64(idx)))
		for i := range s.cols {
			col := &s.cols[i]
			out, err := col.expr.Eval(c, focus, st.cells[col.out][:0])
			st.cells[col.out] = out
			if err != nil {
				return v.rowErr(col.name, "%w", err)
			}
			if !col.collection && len(out) > 1 {
				return v.rowErr(col.name, "multiple values found but not expected for column (%d values; set collection: true)", len(out))
			}
			st.isNull[col.out] = false
		}
	}
	return v.nested(st, s, 0, focus, idx, k)
}

func (v *View) nested(st *state, s *selectNode, i int, focus []fhirpath.Item, idx int, k func() error) error {
	if i < len(s.selects) {
		return v.process(st, s.selects[i], focus, idx, func() error {
			return v.nested(st, s, i+1, focus, idx, k)
		})
	}
	if len(s.unions) == 0 {
		return k()
	}
	for _, u := range s.unions {
		if err := v.process(st, u, focus, idx, k); err != nil {
			return err
		}
	}
	return nil
}
