package fhirpath

import (
	"fmt"
	"strings"

	"github.com/valyala/fastjson"
)

// evalFn evaluates a compiled (sub)expression with focus as its input
// collection ($this) and appends the result to dst.
type evalFn func(c *Ctx, focus []Item, dst []Item) ([]Item, error)

// Options configure compilation.
type Options struct {
	// Constants are substituted at compile time for %name; their kind and
	// FHIR type are kept (an integer constant can index, a date compares as
	// a date).
	Constants map[string]Item
	// Vars names dynamic variables: %Vars[i] reads the value bound with
	// Ctx.SetVar(i, ...) at evaluation time (e.g. %rowIndex).
	Vars []string
}

// Expr is a compiled FHIRPath expression. It is immutable and safe for
// concurrent use; all evaluation state lives in the Ctx.
type Expr struct {
	src  string
	fn   evalFn
	typ  string
	root *node // kept for ElementType
}

// String returns the expression's source text.
func (e *Expr) String() string { return e.src }

// ResultType returns the FHIR type the expression is known to yield
// (boolean for exists(), integer for count(), the T of a trailing
// ofType(T), ...) or "" when it depends on data.
func (e *Expr) ResultType() string { return e.typ }

// Eval evaluates e with focus as the input collection and appends the
// result to dst. Result items may point into the resource's parse and into
// c; they are valid until c.Reset.
func (e *Expr) Eval(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
	return e.fn(c, focus, dst)
}

// EvalResource evaluates e against a parsed resource with a fresh binding
// of %resource. It is a convenience for one-off evaluations.
func (e *Expr) EvalResource(c *Ctx, res *fastjson.Value) ([]Item, error) {
	r := Resource(res)
	c.Reset(r)
	return e.fn(c, []Item{r}, nil)
}

// CompileError reports a semantic error (unknown function, undefined
// variable, wrong arguments) in an expression.
type CompileError struct {
	Expr string
	Pos  int
	Msg  string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("fhirpath: %s at offset %d in %q", e.Msg, e.Pos, e.Expr)
}

type compiler struct {
	src  string
	opts *Options
	// memo maps the nodes whose results a CompileSet shares to their
	// slots in Ctx.memo; set is that CompileSet's identity.
	memo map[*node]int
	set  *memoSet
}

// Compile parses and compiles src. Errors are *SyntaxError or *CompileError.
func Compile(src string, opts *Options) (*Expr, error) {
	n, err := parseExpr(src)
	if err != nil {
		return nil, err
	}
	return (&compiler{src: src, opts: opts}).expr(n)
}

// parseExpr parses src, which must not be blank.
func parseExpr(src string) (*node, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &SyntaxError{Expr: src, Msg: "empty expression"}
	}
	return parse(src)
}

// expr compiles n, the tree of cp.src.
func (cp *compiler) expr(n *node) (*Expr, error) {
	if cp.opts == nil {
		cp.opts = &Options{}
	}
	fn, err := cp.compile(n)
	if err != nil {
		return nil, err
	}
	return &Expr{src: cp.src, fn: fn, typ: resultType(n), root: n}, nil
}

func (cp *compiler) errf(n *node, format string, a ...any) error {
	return &CompileError{Expr: cp.src, Pos: n.pos, Msg: fmt.Sprintf(format, a...)}
}

func (cp *compiler) compile(n *node) (evalFn, error) {
	slot, shared := cp.memo[n]
	fn, err := cp.compileNode(n)
	if err != nil || !shared {
		return fn, err
	}
	return memoize(cp.set, slot, fn), nil
}

func (cp *compiler) compileNode(n *node) (evalFn, error) {
	switch n.kind {
	case nLit:
		lit := n.lit
		return func(_ *Ctx, _ []Item, dst []Item) ([]Item, error) { return append(dst, lit), nil }, nil
	case nEmpty:
		return func(_ *Ctx, _ []Item, dst []Item) ([]Item, error) { return dst, nil }, nil
	case nThis:
		return func(_ *Ctx, focus []Item, dst []Item) ([]Item, error) { return append(dst, focus...), nil }, nil
	case nIndexVar:
		return func(c *Ctx, _ []Item, dst []Item) ([]Item, error) {
			return append(dst, Item{i: int64(c.iterIdx), k: KindInteger}), nil
		}, nil
	case nVar:
		return cp.compileVar(n)
	case nMember:
		return compileMember(n.name), nil
	case nCall:
		return cp.compileCall(n)
	case nInvoke:
		return cp.compileInvoke(n)
	case nIndex:
		return cp.compileIndex(n)
	case nUnary:
		return cp.compileUnary(n)
	case nTypeOp:
		return cp.compileTypeOp(n)
	case nBinary:
		return cp.compileBinary(n)
	}
	return nil, cp.errf(n, "unsupported expression")
}

// compileMember compiles an identifier at the start of a path, where an
// upper-case name may also be the resource type (Patient.name).
func compileMember(name string) evalFn {
	typeName := name != "" && name[0] >= 'A' && name[0] <= 'Z'
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		for _, it := range focus {
			if typeName && it.k == KindObject && it.fhirType() == name && it.j.Get(name) == nil {
				dst = append(dst, it) // Patient.name: a type name selects the resource
				continue
			}
			dst = c.child(it, name, dst)
		}
		return dst, nil
	}
}

// compileInvoke compiles left.right, where right is a member or a call
// applied to left's result.
func (cp *compiler) compileInvoke(n *node) (evalFn, error) {
	left, err := cp.compile(n.left)
	if err != nil {
		return nil, err
	}
	var right evalFn
	if n.right.kind == nMember {
		name := n.right.name
		right = func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			for _, it := range in {
				dst = c.child(it, name, dst)
			}
			return dst, nil
		}
	} else if right, err = cp.compileCall(n.right); err != nil {
		return nil, err
	}
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		buf := c.get()
		buf, err := left(c, focus, buf)
		if err == nil {
			dst, err = right(c, buf, dst)
		}
		c.put(buf)
		return dst, err
	}, nil
}

// compileIndex compiles left[index]; the index is evaluated on the
// indexer's own input, not on left's result.
func (cp *compiler) compileIndex(n *node) (evalFn, error) {
	left, err := cp.compile(n.left)
	if err != nil {
		return nil, err
	}
	idx, err := cp.compile(n.args[0])
	if err != nil {
		return nil, err
	}
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		buf := c.get()
		defer c.put(buf)
		buf, err := left(c, focus, buf)
		if err != nil {
			return dst, err
		}
		i, ok, err := c.intArg(idx, focus, "indexer")
		if err != nil || !ok {
			return dst, err
		}
		if i >= 0 && i < int64(len(buf)) {
			dst = append(dst, buf[i])
		}
		return dst, nil
	}, nil
}

func (cp *compiler) compileUnary(n *node) (evalFn, error) {
	operand, err := cp.compile(n.left)
	if err != nil {
		return nil, err
	}
	neg := n.name == "-"
	what := "unary " + n.name
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		buf := c.get()
		defer c.put(buf)
		buf, err := operand(c, focus, buf)
		if err != nil {
			return dst, err
		}
		it, ok, err := single(buf, what)
		if err != nil || !ok {
			return dst, err
		}
		if !neg {
			return append(dst, it), nil
		}
		return negate(it, dst)
	}, nil
}

// compileTypeOp compiles the is and as operators, which share their
// evaluation with the functions of the same name.
func (cp *compiler) compileTypeOp(n *node) (evalFn, error) {
	left, err := cp.compile(n.left)
	if err != nil {
		return nil, err
	}
	what, t, is := n.name, n.lit.s, n.name == "is"
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		buf := c.get()
		defer c.put(buf)
		buf, err := left(c, focus, buf)
		if err != nil {
			return dst, err
		}
		return typeTest(buf, what, t, is, dst)
	}, nil
}

func (cp *compiler) compileVar(n *node) (evalFn, error) {
	if v, ok := cp.opts.Constants[n.name]; ok {
		return func(_ *Ctx, _ []Item, dst []Item) ([]Item, error) { return append(dst, v), nil }, nil
	}
	for i, name := range cp.opts.Vars {
		if name == n.name {
			return func(c *Ctx, _ []Item, dst []Item) ([]Item, error) {
				if i < len(c.vars) && c.vars[i].k != KindNone {
					dst = append(dst, c.vars[i])
				}
				return dst, nil
			}, nil
		}
	}
	switch n.name {
	case "resource", "rootResource", "context":
		return func(c *Ctx, _ []Item, dst []Item) ([]Item, error) {
			if c.resource.k != KindNone {
				dst = append(dst, c.resource)
			}
			return dst, nil
		}, nil
	case "ucum":
		return cp.compile(&node{kind: nLit, lit: String("http://unitsofmeasure.org")})
	case "sct":
		return cp.compile(&node{kind: nLit, lit: String("http://snomed.info/sct")})
	case "loinc":
		return cp.compile(&node{kind: nLit, lit: String("http://loinc.org")})
	}
	return nil, cp.errf(n, "undefined variable %%%s", n.name)
}

// child appends it.name to dst, flattening arrays and resolving choice
// elements (value → valueQuantity) by their type suffix.
func (c *Ctx) child(it Item, name string, dst []Item) []Item {
	if it.k != KindObject || it.j == nil {
		return dst
	}
	if v := it.j.Get(name); v != nil {
		return c.appendJSON(v, "", dst)
	}
	obj, err := it.j.Object()
	if err != nil {
		return dst
	}
	var hit *fastjson.Value
	var typ string
	obj.Visit(func(k []byte, v *fastjson.Value) {
		if hit != nil || len(k) <= len(name) || b2s(k[:len(name)]) != name {
			return
		}
		if t, ok := choiceSuffix[b2s(k[len(name):])]; ok {
			hit, typ = v, t
		}
	})
	if hit == nil {
		return dst
	}
	return c.appendJSON(hit, typ, dst)
}

func (c *Ctx) appendJSON(v *fastjson.Value, typ string, dst []Item) []Item {
	if v.Type() == fastjson.TypeArray {
		arr, _ := v.Array()
		for _, e := range arr {
			if it, ok := c.wrap(e, typ); ok {
				dst = append(dst, it)
			}
		}
		return dst
	}
	if it, ok := c.wrap(v, typ); ok {
		dst = append(dst, it)
	}
	return dst
}

// single returns the only item of in; ok is false when in is empty, and
// more than one item is an error (FHIRPath singleton evaluation).
func single(in []Item, what string) (Item, bool, error) {
	switch len(in) {
	case 0:
		return Item{}, false, nil
	case 1:
		return in[0], true, nil
	}
	return Item{}, false, fmt.Errorf("fhirpath: %s expects a single item, got %d", what, len(in))
}

// asBool applies FHIRPath singleton evaluation for a Boolean context.
func asBool(in []Item, what string) (val, ok bool, err error) {
	it, ok, err := single(in, what)
	if err != nil || !ok {
		return false, false, err
	}
	if it.k == KindBool {
		return it.i != 0, true, nil
	}
	return true, true, nil
}

// intArg evaluates an integer argument.
func (c *Ctx) intArg(fn evalFn, focus []Item, what string) (int64, bool, error) {
	buf := c.get()
	defer c.put(buf)
	buf, err := fn(c, focus, buf)
	if err != nil {
		return 0, false, err
	}
	it, ok, err := single(buf, what)
	if err != nil || !ok {
		return 0, false, err
	}
	if it.k != KindInteger {
		return 0, false, fmt.Errorf("fhirpath: %s needs an integer, got %s", what, it.k)
	}
	return it.i, true, nil
}

// strArg evaluates a string argument.
func (c *Ctx) strArg(fn evalFn, focus []Item, what string) (string, bool, error) {
	buf := c.get()
	defer c.put(buf)
	buf, err := fn(c, focus, buf)
	if err != nil {
		return "", false, err
	}
	it, ok, err := single(buf, what)
	if err != nil || !ok {
		return "", false, err
	}
	if it.k == KindObject || it.k == KindBool {
		return "", false, fmt.Errorf("fhirpath: %s needs a string, got %s", what, it.k)
	}
	return it.s, true, nil
}

func resultType(n *node) string {
	switch n.kind {
	case nLit:
		switch n.lit.k {
		case KindBool:
			return "boolean"
		case KindInteger:
			return "integer"
		case KindDecimal:
			return "decimal"
		case KindString:
			return "string"
		case KindDate:
			return "date"
		case KindDateTime:
			return "dateTime"
		case KindTime:
			return "time"
		}
	case nInvoke:
		return resultType(n.right)
	case nBinary:
		switch n.name {
		case "=", "!=", "~", "!~", "<", ">", "<=", ">=", "and", "or", "xor", "implies", "in", "contains":
			return "boolean"
		case "&":
			return "string"
		}
	case nTypeOp:
		if n.name == "is" {
			return "boolean"
		}
		return typeName(n.lit.s)
	case nVar:
		if n.name == "rowIndex" {
			return "integer"
		}
	case nCall:
		switch n.name {
		case "ofType", "as":
			if len(n.args) == 1 {
				if t, ok := typeArg(n.args[0]); ok {
					return typeName(t)
				}
			}
			return ""
		}
		return registry[n.name].result
	}
	return ""
}

// typeName maps a type specifier to the FHIR type name used for columns.
func typeName(t string) string {
	t = strings.TrimPrefix(strings.TrimPrefix(t, "FHIR."), "System.")
	switch t {
	case "Boolean":
		return "boolean"
	case "Integer":
		return "integer"
	case "Decimal":
		return "decimal"
	case "String":
		return "string"
	case "Date":
		return "date"
	case "DateTime":
		return "dateTime"
	case "Time":
		return "time"
	}
	return t
}

// typeArg extracts a type specifier argument (Quantity, FHIR.Quantity).
func typeArg(n *node) (string, bool) {
	switch n.kind {
	case nMember:
		return n.name, true
	case nInvoke:
		if n.left.kind == nMember && n.right.kind == nMember {
			return n.left.name + "." + n.right.name, true
		}
	case nLit:
		if n.lit.k == KindString {
			return n.lit.s, true
		}
	}
	return "", false
}
