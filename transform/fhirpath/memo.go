package fhirpath

import (
	"fmt"
	"strings"
)

// CompileSet compiles expressions that are evaluated one after another on
// the same input, such as the columns of one ViewDefinition select:
// a sub-expression they have in common on that input (the
// code.coding.first() of code.coding.first().system and
// code.coding.first().code) is evaluated once and its result reused by the
// others. The result is reused only for the same single-item input, the
// same resource (Ctx.Reset) and the same variables (Ctx.SetVar), so each
// expression still means exactly what Compile would make of it.
//
// exprs[i] is nil where errs[i] is not; errs is nil when every expression
// compiled.
func CompileSet(srcs []string, opts *Options) (exprs []*Expr, errs []error) {
	exprs = make([]*Expr, len(srcs))
	roots := make([]*node, len(srcs))
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(srcs))
		}
		errs[i] = err
	}
	for i, src := range srcs {
		n, err := parseExpr(src)
		if err != nil {
			fail(i, err)
			continue
		}
		roots[i] = n
	}
	memo := sharedNodes(roots)
	set := &memoSet{}
	for i, n := range roots {
		if n == nil {
			continue
		}
		var err error
		if exprs[i], err = (&compiler{src: srcs[i], opts: opts, memo: memo, set: set}).expr(n); err != nil {
			fail(i, err)
		}
	}
	return exprs, errs
}

// memoSet identifies one CompileSet: slots are numbered per set, and an
// entry left by another set's expressions is never taken for this one's.
type memoSet struct{ _ byte }

// memoEntry is the last result of one shared sub-expression.
type memoEntry struct {
	set   *memoSet
	epoch uint64
	focus Item
	items []Item
	err   error
}

// memoize wraps fn, the compiled form of a shared sub-expression, so that
// within an epoch it runs once per input item.
func memoize(set *memoSet, slot int, fn evalFn) evalFn {
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		if len(focus) != 1 {
			return fn(c, focus, dst)
		}
		if slot >= len(c.memo) {
			c.memo = append(c.memo, make([]memoEntry, slot+1-len(c.memo))...)
		}
		if m := &c.memo[slot]; m.set == set && m.epoch == c.epoch && m.focus == focus[0] {
			return append(dst, m.items...), m.err
		}
		epoch, start := c.epoch, len(dst)
		dst, err := fn(c, focus, dst)
		m := &c.memo[slot] // fn may have grown c.memo
		m.set, m.epoch, m.focus, m.err = set, epoch, focus[0], err
		m.items = append(m.items[:0], dst[start:]...)
		return dst, err
	}
}

// sharedNodes finds the sub-expressions worth sharing among roots: those
// evaluated on the expressions' own input (the receiver chain and operands,
// not function arguments, which see other inputs), found at least twice,
// more than just a member name or a literal, and not already covered by a
// larger shared expression around every occurrence. Nodes with equal text
// get the same slot.
func sharedNodes(roots []*node) map[*node]int {
	type occurrence struct {
		n, parent *node
		key       string
	}
	var occs []occurrence
	count := map[string]int{}
	keys := map[*node]string{}
	for _, r := range roots {
		if r == nil {
			continue
		}
		onInput(r, nil, func(n, parent *node) {
			k := nodeKey(n)
			keys[n] = k
			count[k]++
			occs = append(occs, occurrence{n: n, parent: parent, key: k})
		})
	}
	slots := map[string]int{}
	for _, o := range occs {
		if count[o.key] < 2 || !shareable(o.n) {
			continue
		}
		if o.parent != nil && count[keys[o.parent]] >= count[o.key] && shareable(o.parent) {
			continue // the parent is shared wherever this is
		}
		if _, ok := slots[o.key]; !ok {
			slots[o.key] = len(slots)
		}
	}
	if len(slots) == 0 {
		return nil
	}
	memo := map[*node]int{}
	for n, k := range keys {
		if s, ok := slots[k]; ok {
			memo[n] = s
		}
	}
	return memo
}

// onInput calls fn for n and for each node below it that is evaluated on
// the same input as n.
func onInput(n, parent *node, fn func(n, parent *node)) {
	fn(n, parent)
	switch n.kind {
	case nInvoke, nUnary, nTypeOp:
		onInput(n.left, n, fn)
	case nIndex:
		onInput(n.left, n, fn)
		onInput(n.args[0], n, fn)
	case nBinary:
		onInput(n.left, n, fn)
		onInput(n.right, n, fn)
	}
}

// shareable reports whether n is worth a memo slot and safe to reuse: it
// must compute something, and nothing in it may depend on more than the
// input, the resource and the variables.
func shareable(n *node) bool {
	switch n.kind {
	case nInvoke, nIndex, nCall, nBinary, nUnary, nTypeOp:
	default:
		return false
	}
	return !volatile(n)
}

func volatile(n *node) bool {
	if n == nil {
		return false
	}
	switch {
	case n.kind == nIndexVar:
		return true
	case n.kind == nCall && (n.name == "now" || n.name == "today" || n.name == "timeOfDay" || n.name == "trace"):
		return true
	}
	if volatile(n.left) || volatile(n.right) {
		return true
	}
	for _, a := range n.args {
		if volatile(a) {
			return true
		}
	}
	return false
}

// nodeKey is a canonical text of the expression tree under n: equal keys,
// equal expressions.
func nodeKey(n *node) string {
	var b strings.Builder
	writeKey(&b, n)
	return b.String()
}

func writeKey(b *strings.Builder, n *node) {
	if n == nil {
		b.WriteByte('_')
		return
	}
	fmt.Fprintf(b, "(%d %q %d %q %d %q ", n.kind, n.name, n.lit.k, n.lit.s, n.lit.i, n.lit.typ)
	writeKey(b, n.left)
	writeKey(b, n.right)
	for _, a := range n.args {
		writeKey(b, a)
	}
	b.WriteByte(')')
}
