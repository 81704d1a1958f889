package view

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/transform/fhirpath"
)

// Tag is a column tag such as {name: "ansi/type", value: "DATE"}.
type Tag struct {
	Name, Value string
}

// Column describes one output column, in output order.
type Column struct {
	Name        string
	Path        string
	Description string
	// Type is the FHIR type: the declared one (a StructureDefinition URL is
	// reduced to its last segment), else one inferred from the path
	// (exists() → boolean, %rowIndex → integer, ofType(X) → X), else "".
	Type       string
	Collection bool
	Tags       []Tag
	// PrecisionOf names the date or dateTime column whose precision this
	// companion column holds (see WarehouseTypes); "" for the view's own
	// columns.
	PrecisionOf string
}

// Tag returns the value of the first tag named name, or "".
func (c Column) Tag(name string) string {
	for _, t := range c.Tags {
		if t.Name == name {
			return t.Value
		}
	}
	return ""
}

// PartialPolicy says what happens to a partial date or dateTime (1970-06)
// written to a column whose ansi/type tag asks for DATE or TIMESTAMP.
type PartialPolicy int

const (
	// PartialError makes the value an error naming the column, so the
	// pipeline rejects the resource (the default: nothing is invented).
	PartialError PartialPolicy = iota
	// PartialNull stores NULL.
	PartialNull
	// PartialLowBoundary stores the earliest instant the value covers
	// (1970-06 → 1970-06-01).
	PartialLowBoundary
)

type config struct {
	partial        PartialPolicy
	warehouse      bool
	anyResource    bool
	maxRepeatDepth int
}

// Option configures Compile.
type Option func(*config)

// WithPartialDates sets how partial dates reach DATE/TIMESTAMP columns.
func WithPartialDates(p PartialPolicy) Option { return func(c *config) { c.partial = p } }

// WarehouseTypes types the columns for SQL: integer, positiveInt,
// unsignedInt and integer64 → int64; decimal → float64; date → date32;
// dateTime and instant → timestamp[us, UTC]; other primitives stay text as
// written. FHIR allows partial dates (2024, 2024-05) and dateTimes without
// a time, so each date and dateTime column gets a companion text column
// <name>_precision (year, month, day or time), after the view's own
// columns, and its partial values are stored as the earliest instant they
// cover in UTC: with both, nothing of the value is lost but the zone offset,
// which the raw landing keeps. An ansi/type tag still decides its column's
// type.
func WarehouseTypes() Option { return func(c *config) { c.warehouse = true } }

// AllowUnknownResource accepts resource types outside FHIR R4/R5 (custom
// or newer resources).
func AllowUnknownResource() Option { return func(c *config) { c.anyResource = true } }

// WithMaxRepeatDepth bounds the recursion of select.repeat (default 64).
func WithMaxRepeatDepth(n int) Option { return func(c *config) { c.maxRepeatDepth = n } }

// View is a compiled ViewDefinition. It is immutable and safe for
// concurrent use; per-call scratch state is pooled.
type View struct {
	Name, Resource string

	cols   []Column
	conv   []converter
	root   *selectNode
	where  []*fhirpath.Expr
	cfg    config
	schema *arrow.Schema
	states sync.Pool
}

// Columns returns the output columns in the spec's order.
func (v *View) Columns() []Column { return v.cols }

type iterKind uint8

const (
	iterNone iterKind = iota
	iterForEach
	iterForEachOrNull
	iterRepeat
)

type colInst struct {
	out        int
	name       string
	expr       *fhirpath.Expr
	collection bool
	typ        string
	desc       string
	tags       []Tag
}

type selectNode struct {
	loc      string
	cols     []colInst
	selects  []*selectNode
	unions   []*selectNode
	iter     iterKind
	iterExpr *fhirpath.Expr
	repeat   []*fhirpath.Expr
	// set by layout
	base, width  int   // output columns [base, base+width) belong to this subtree
	rowIndexCols []int // subtree columns whose path is exactly %rowIndex
}

var sqlName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// CompileError lists every static problem found in a ViewDefinition.
type CompileError struct {
	View     string
	Problems []string // each "<location>: <problem>"
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("view %s: %s", e.View, strings.Join(e.Problems, "; "))
}

type compiler struct {
	errs   []string
	consts map[string]fhirpath.Item
	opts   *fhirpath.Options
}

func (c *compiler) errf(loc, format string, a ...any) {
	c.errs = append(c.errs, loc+": "+fmt.Sprintf(format, a...))
}

// Compile parses and validates a ViewDefinition (SQL-on-FHIR v2.x or
// 3.0 form) and compiles its FHIRPath. It reports every static error the
// spec lists at once, each with the view and the offending JSON path.
func Compile(def []byte, opts ...Option) (*View, error) {
	v := &View{cfg: config{maxRepeatDepth: 64}}
	for _, o := range opts {
		o(&v.cfg)
	}
	var p fastjson.Parser
	root, err := p.ParseBytes(def)
	if err != nil {
		return nil, fmt.Errorf("view: invalid JSON: %w", err)
	}
	if root.Type() != fastjson.TypeObject {
		return nil, errors.New("view: definition is not a JSON object")
	}
	c := &compiler{consts: map[string]fhirpath.Item{}}
	label := c.identity(v, root)
	c.constants(root.Get("constant"))
	c.opts = &fhirpath.Options{Constants: c.consts, Vars: []string{"rowIndex"}}
	v.where = c.where(root.Get("where"))
	v.root = &selectNode{loc: "view", selects: c.selects(root.Get("select"))}
	if len(c.errs) == 0 && v.cfg.warehouse {
		inferTypes(v.root, v.Resource)
	}
	if len(c.errs) == 0 {
		v.cols = c.columns(v.root)
		if v.cfg.warehouse {
			v.cols = c.precisionColumns(v.cols)
		}
	}
	if len(c.errs) == 0 {
		v.conv = c.converters(v.cols, v.cfg)
	}
	if len(c.errs) > 0 {
		return nil, &CompileError{View: label, Problems: c.errs}
	}
	v.schema = v.buildSchema()
	n := len(v.cols)
	v.states.New = func() any { return newState(n) }
	return v, nil
}

// identity reads the view's name and resource into v and returns the
// label errors are reported under.
func (c *compiler) identity(v *View, root *fastjson.Value) string {
	label := "(unnamed)"
	if n := root.Get("name"); n != nil {
		s, err := n.StringBytes()
		switch {
		case err != nil:
			c.errf("name", "must be a string")
		case !sqlName.Match(s):
			c.errf("name", "%q is not a valid sql-name (^[A-Za-z][A-Za-z0-9_]*$)", s)
		default:
			v.Name = string(s)
			label = v.Name
		}
	}
	if r := root.Get("resource"); r == nil {
		c.errf("resource", "missing")
	} else if s, err := r.StringBytes(); err != nil || len(s) == 0 {
		c.errf("resource", "must be a non-empty string")
	} else {
		v.Resource = string(s)
		if !v.cfg.anyResource && !fhirpath.IsResourceType(v.Resource) {
			c.errf("resource", "unknown FHIR resource type %q", v.Resource)
		}
	}
	return label
}

// where compiles the view's where paths (w may be nil).
func (c *compiler) where(w *fastjson.Value) []*fhirpath.Expr {
	if w == nil {
		return nil
	}
	arr, err := w.Array()
	if err != nil {
		c.errf("where", "must be an array")
	}
	var out []*fhirpath.Expr
	for i, e := range arr {
		loc := fmt.Sprintf("where[%d].path", i)
		if ex := c.expr(e.Get("path"), loc, true); ex != nil {
			out = append(out, ex)
		}
	}
	return out
}

// selects compiles the view's top-level select, which is required.
func (c *compiler) selects(sel *fastjson.Value) []*selectNode {
	if sel == nil {
		c.errf("select", "missing")
		return nil
	}
	arr, err := sel.Array()
	if err != nil || len(arr) == 0 {
		c.errf("select", "must be a non-empty array")
		return nil
	}
	var out []*selectNode
	for i, s := range arr {
		if n := c.selection(s, fmt.Sprintf("select[%d]", i)); n != nil {
			out = append(out, n)
		}
	}
	return out
}

// columns lays out the output columns of the tree under root, whose
// names must be unique.
func (c *compiler) columns(root *selectNode) []Column {
	var cols []Column
	c.layout(root, 0, &cols)
	seen := map[string]bool{}
	for _, col := range cols {
		if seen[col.Name] {
			c.errf("select", "column %q is defined more than once", col.Name)
		}
		seen[col.Name] = true
	}
	return cols
}

// inferTypes gives the columns under n that declare no type the one their
// path resolves to in the FHIR R4 definitions, evaluated on a value of
// type ctx (the resource type at the top; "" where it cannot be known,
// under repeat).
func inferTypes(n *selectNode, ctx string) {
	switch n.iter {
	case iterForEach, iterForEachOrNull:
		ctx = n.iterExpr.ElementContext(ctx)
	case iterRepeat:
		ctx = ""
	}
	for i := range n.cols {
		if ci := &n.cols[i]; ci.typ == "" && ci.expr != nil && ctx != "" {
			ci.typ = ci.expr.ElementType(ctx)
		}
	}
	for _, s := range n.selects {
		inferTypes(s, ctx)
	}
	for _, u := range n.unions {
		inferTypes(u, ctx)
	}
}

// precisionColumns appends the companion <name>_precision column of each
// date and dateTime column that WarehouseTypes types.
func (c *compiler) precisionColumns(cols []Column) []Column {
	seen := make(map[string]bool, len(cols))
	for _, col := range cols {
		seen[col.Name] = true
	}
	n := len(cols)
	for _, col := range cols[:n] {
		if !hasPrecision(col) {
			continue
		}
		name := col.Name + "_precision"
		if seen[name] {
			c.errf("column "+name, "clashes with the precision column of %s (rename one of them)", col.Name)
			continue
		}
		seen[name] = true
		cols = append(cols, Column{
			Name: name, Path: col.Path, Type: "code", Collection: col.Collection, PrecisionOf: col.Name,
			Description: "Precision of " + col.Name + " as the source wrote it: year, month, day or time; " +
				col.Name + " holds the earliest instant the value covers.",
		})
	}
	return cols
}

// hasPrecision reports whether WarehouseTypes gives col a precision
// companion: a date or dateTime column without an ansi/type tag.
func hasPrecision(col Column) bool {
	return (col.Type == "date" || col.Type == "dateTime") && col.Tag("ansi/type") == ""
}

// converters makes each column's converter, reporting the columns whose
// type and ansi/type tag do not fit.
func (c *compiler) converters(cols []Column, cfg config) []converter {
	conv := make([]converter, len(cols))
	index := make(map[string]int, len(cols))
	for i, col := range cols {
		index[col.Name] = i
		if col.PrecisionOf != "" {
			conv[i] = converter{col: col.Name, fhirType: col.Type, src: index[col.PrecisionOf], precision: true, collection: col.Collection}
			continue
		}
		cv, err := newConverter(col, cfg)
		if err != nil {
			c.errf("column "+col.Name, "%v", err)
			continue
		}
		cv.src = i
		conv[i] = cv
	}
	return conv
}

func (c *compiler) expr(val *fastjson.Value, loc string, required bool) *fhirpath.Expr {
	if val == nil {
		if required {
			c.errf(loc, "missing")
		}
		return nil
	}
	s, ok := c.path(val, loc)
	if !ok {
		return nil
	}
	e, err := fhirpath.Compile(s, c.opts)
	if err != nil {
		c.errf(loc, "%v", err)
		return nil
	}
	return e
}

// path reads the FHIRPath string at loc (required).
func (c *compiler) path(val *fastjson.Value, loc string) (string, bool) {
	if val == nil {
		c.errf(loc, "missing")
		return "", false
	}
	s, err := val.StringBytes()
	if err != nil {
		c.errf(loc, "must be a FHIRPath string, got %s", val.Type())
		return "", false
	}
	return string(s), true
}

func (c *compiler) selection(s *fastjson.Value, loc string) *selectNode {
	if s.Type() != fastjson.TypeObject {
		c.errf(loc, "must be an object")
		return nil
	}
	n := &selectNode{loc: loc}
	directives := 0
	if fe := s.Get("forEach"); fe != nil {
		directives++
		n.iter, n.iterExpr = iterForEach, c.expr(fe, loc+".forEach", true)
	}
	if fe := s.Get("forEachOrNull"); fe != nil {
		directives++
		n.iter, n.iterExpr = iterForEachOrNull, c.expr(fe, loc+".forEachOrNull", true)
	}
	if r := s.Get("repeat"); r != nil {
		directives++
		n.iter = iterRepeat
		arr, err := r.Array()
		if err != nil || len(arr) == 0 {
			c.errf(loc+".repeat", "must be a non-empty array of FHIRPath strings")
		}
		for i, p := range arr {
			if e := c.expr(p, fmt.Sprintf("%s.repeat[%d]", loc, i), true); e != nil {
				n.repeat = append(n.repeat, e)
			}
		}
	}
	if directives > 1 {
		c.errf(loc, "at most one of forEach, forEachOrNull and repeat may be set")
	}
	if col := s.Get("column"); col != nil {
		arr, err := col.Array()
		if err != nil {
			c.errf(loc+".column", "must be an array")
		}
		var paths, locs []string
		var idx []int
		for i, cv := range arr {
			l := fmt.Sprintf("%s.column[%d]", loc, i)
			if p, ok := c.column(n, cv, l); ok {
				paths, locs, idx = append(paths, p), append(locs, l+".path"), append(idx, len(n.cols)-1)
			}
		}
		// The columns of a select are evaluated one after another on the
		// same node, so they are compiled as a set that shares common
		// sub-expressions (code.coding.first() for _system, _code and
		// _display): a quarter of the default views' evaluation.
		exprs, errs := fhirpath.CompileSet(paths, c.opts)
		for i := range exprs {
			if errs != nil && errs[i] != nil {
				c.errf(locs[i], "%v", errs[i])
				continue
			}
			n.cols[idx[i]].expr = exprs[i]
		}
	}
	for _, key := range []string{"select", "unionAll"} {
		sub := s.Get(key)
		if sub == nil {
			continue
		}
		arr, err := sub.Array()
		if err != nil || (key == "unionAll" && len(arr) == 0) {
			c.errf(loc+"."+key, "must be a non-empty array")
			continue
		}
		for i, e := range arr {
			child := c.selection(e, fmt.Sprintf("%s.%s[%d]", loc, key, i))
			if child == nil {
				continue
			}
			if key == "select" {
				n.selects = append(n.selects, child)
			} else {
				n.unions = append(n.unions, child)
			}
		}
	}
	return n
}

// column appends the column cv to n and returns its path, which the
// caller compiles; ok is false when cv has no string path (or is not an
// object, when nothing is appended).
func (c *compiler) column(n *selectNode, cv *fastjson.Value, loc string) (path string, ok bool) {
	if cv.Type() != fastjson.TypeObject {
		c.errf(loc, "must be an object")
		return "", false
	}
	ci := colInst{}
	if nm := cv.Get("name"); nm == nil {
		c.errf(loc+".name", "missing")
	} else if s, err := nm.StringBytes(); err != nil || !sqlName.Match(s) {
		c.errf(loc+".name", "must be a sql-name (^[A-Za-z][A-Za-z0-9_]*$)")
	} else {
		ci.name = string(s)
	}
	path, ok = c.path(cv.Get("path"), loc+".path")
	if col := cv.Get("collection"); col != nil {
		switch col.Type() {
		case fastjson.TypeTrue:
			ci.collection = true
		case fastjson.TypeFalse:
		default:
			c.errf(loc+".collection", "must be a boolean")
		}
	}
	ci.desc = string(cv.GetStringBytes("description"))
	if t := cv.Get("type"); t != nil {
		s, err := t.StringBytes()
		if err != nil {
			c.errf(loc+".type", "must be a string")
		} else {
			ci.typ = normaliseType(string(s))
		}
	}
	for _, key := range []string{"tag", "tags"} {
		if tv := cv.Get(key); tv != nil {
			arr, err := tv.Array()
			if err != nil {
				c.errf(loc+"."+key, "must be an array")
			}
			for i, t := range arr {
				nv, vv := t.Get("name"), t.Get("value")
				if nv == nil || vv == nil || nv.Type() != fastjson.TypeString || vv.Type() != fastjson.TypeString {
					c.errf(fmt.Sprintf("%s.%s[%d]", loc, key, i), "needs string name and value")
					continue
				}
				tn, _ := nv.StringBytes()
				tv, _ := vv.StringBytes()
				ci.tags = append(ci.tags, Tag{Name: string(tn), Value: string(tv)})
			}
		}
	}
	n.cols = append(n.cols, ci)
	return path, ok
}

// normaliseType reduces http://hl7.org/fhir/StructureDefinition/X to X.
func normaliseType(t string) string {
	if i := strings.LastIndexByte(t, '/'); i >= 0 {
		t = t[i+1:]
	}
	return t
}

func (c *compiler) constants(cv *fastjson.Value) {
	if cv == nil {
		return
	}
	arr, err := cv.Array()
	if err != nil {
		c.errf("constant", "must be an array")
		return
	}
	for i, k := range arr {
		loc := fmt.Sprintf("constant[%d]", i)
		obj, err := k.Object()
		if err != nil {
			c.errf(loc, "must be an object")
			continue
		}
		name := string(k.GetStringBytes("name"))
		if !sqlName.MatchString(name) {
			c.errf(loc+".name", "must be a sql-name")
		}
		var items []fhirpath.Item
		var problems []string
		obj.Visit(func(key []byte, val *fastjson.Value) {
			t, ok := strings.CutPrefix(string(key), "value")
			if !ok || t == "" {
				return
			}
			it, err := constantItem(t, val)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s.%s: %v", loc, key, err))
				return
			}
			items = append(items, it)
		})
		c.errs = append(c.errs, problems...)
		switch {
		case len(problems) > 0:
		case len(items) == 0:
			c.errf(loc, "constant %q has no value[x]", name)
		case len(items) > 1:
			c.errf(loc, "constant %q has more than one value[x]", name)
		default:
			if _, dup := c.consts[name]; dup {
				c.errf(loc, "constant %q is defined twice", name)
			}
			c.consts[name] = items[0]
		}
	}
}

func constantItem(suffix string, val *fastjson.Value) (fhirpath.Item, error) {
	typ := strings.ToLower(suffix[:1]) + suffix[1:]
	str := func() (string, error) {
		b, err := val.StringBytes()
		if err != nil {
			return "", fmt.Errorf("must be a string")
		}
		return string(b), nil
	}
	switch typ {
	case "boolean":
		switch val.Type() {
		case fastjson.TypeTrue:
			return fhirpath.Bool(true), nil
		case fastjson.TypeFalse:
			return fhirpath.Bool(false), nil
		}
		return fhirpath.Item{}, fmt.Errorf("must be a boolean")
	case "integer", "positiveInt", "unsignedInt", "integer64":
		var n int64
		var err error
		if typ == "integer64" && val.Type() == fastjson.TypeString {
			_, err = fmt.Sscan(string(val.GetStringBytes()), &n)
		} else {
			n, err = val.Int64()
		}
		if err != nil {
			return fhirpath.Item{}, fmt.Errorf("must be an integer")
		}
		return fhirpath.Integer(n).WithType(typ), nil
	case "decimal":
		if val.Type() != fastjson.TypeNumber {
			return fhirpath.Item{}, fmt.Errorf("must be a number")
		}
		return fhirpath.Decimal(string(val.MarshalTo(nil))), nil
	case "date", "dateTime", "instant", "time":
		s, err := str()
		if err != nil {
			return fhirpath.Item{}, err
		}
		k := map[string]fhirpath.Kind{"date": fhirpath.KindDate, "dateTime": fhirpath.KindDateTime,
			"instant": fhirpath.KindDateTime, "time": fhirpath.KindTime}[typ]
		if !fhirpath.ValidTemporal(k, s) {
			return fhirpath.Item{}, fmt.Errorf("%q is not a valid %s", s, typ)
		}
		return fhirpath.Temporal(k, s).WithType(typ), nil
	}
	if fhirpath.IsPrimitiveType(typ) {
		s, err := str()
		if err != nil {
			return fhirpath.Item{}, err
		}
		return fhirpath.String(s).WithType(typ), nil
	}
	return fhirpath.Item{}, fmt.Errorf("unsupported constant type %s", typ)
}

// layout assigns output positions in the spec's order (own columns,
// nested selects, then unionAll taken from branch 0) and checks unionAll
// branches agree.
func (c *compiler) layout(n *selectNode, base int, out *[]Column) []string {
	n.base = base
	var names []string
	add := func(ci *colInst) {
		ci.out = base + len(names)
		names = append(names, ci.name)
		if out != nil {
			typ := ci.typ
			if typ == "" && ci.expr != nil {
				typ = ci.expr.ResultType()
			}
			*out = append(*out, Column{Name: ci.name, Path: ci.expr.String(), Type: typ,
				Collection: ci.collection, Description: ci.desc, Tags: ci.tags})
		}
		if ci.expr.String() == "%rowIndex" {
			n.rowIndexCols = append(n.rowIndexCols, ci.out)
		}
	}
	for i := range n.cols {
		add(&n.cols[i])
	}
	for _, s := range n.selects {
		sub := c.layout(s, base+len(names), out)
		n.rowIndexCols = append(n.rowIndexCols, s.rowIndexCols...)
		names = append(names, sub...)
	}
	if len(n.unions) > 0 {
		first := c.layout(n.unions[0], base+len(names), out)
		n.rowIndexCols = append(n.rowIndexCols, n.unions[0].rowIndexCols...)
		for _, u := range n.unions[1:] {
			other := c.layout(u, base+len(names), nil)
			if strings.Join(other, ",") != strings.Join(first, ",") {
				c.errf(u.loc, "unionAll branches must have the same columns in the same order: (%s) vs (%s)",
					strings.Join(other, ", "), strings.Join(first, ", "))
			}
			n.rowIndexCols = append(n.rowIndexCols, u.rowIndexCols...)
		}
		names = append(names, first...)
	}
	n.width = len(names)
	return names
}
