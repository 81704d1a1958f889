package fhirpath

import (
	_ "embed"
	"strings"
	"sync"
)

// r4elements is the FHIR R4 element types (internal/r4gen writes it): a
// type's name on a line of its own, then its elements, indented by depth
// with tabs, each "name type", "[]" marking repeating ones and "*" choices.
//
//go:embed r4elements.txt
var r4elements string

// r4 maps "Type.path" to its element type, parsed on first use.
var r4 = sync.OnceValue(func() map[string]string {
	m := make(map[string]string, 12000)
	var stack []string
	for _, line := range strings.Split(r4elements, "\n") {
		if line == "" {
			continue
		}
		depth := len(line) - len(strings.TrimLeft(line, "\t"))
		name, typ, _ := strings.Cut(line[depth:], " ")
		stack = append(stack[:depth], name)
		if depth > 0 {
			m[strings.Join(stack, ".")] = typ
		}
	}
	return m
})

// quantities are the profiles of Quantity the definitions name as types.
var quantities = map[string]bool{"SimpleQuantity": true, "MoneyQuantity": true}

// member is the type of element name on a value of type ctx (a type name,
// or the path of a backbone element): the element's type, or for a
// backbone element its path, which is where its own elements are found.
func member(ctx, name string) (string, bool) {
	if quantities[ctx] {
		ctx = "Quantity"
	}
	t, ok := r4()[ctx+"."+name]
	if !ok {
		return "", false
	}
	t = strings.TrimSuffix(t, "[]")
	if t == "BackboneElement" {
		return ctx + "." + name, true
	}
	return t, true
}

// functions that return (a subset of) their input, so of its type.
var sameType = map[string]bool{
	"first": true, "last": true, "single": true, "tail": true, "skip": true, "take": true,
	"where": true, "distinct": true, "trace": true, "intersect": true, "exclude": true,
}

// ElementType is the FHIR type of e's result when it is evaluated on a
// value of type ctx (a resource type, a datatype, or the path of a
// backbone element such as "Observation.component"), found by walking the
// expression through the FHIR R4 element definitions; "" when it depends
// on the data (a choice element without ofType, say) or e leaves the model.
// A backbone element's result is "BackboneElement".
func (e *Expr) ElementType(ctx string) string {
	t := e.ElementContext(ctx)
	if strings.Contains(t, ".") {
		return "BackboneElement"
	}
	return t
}

// ElementContext is ElementType for a value other expressions are then
// evaluated on (a forEach's): a backbone element is its path, where its
// own elements are found.
func (e *Expr) ElementContext(ctx string) string {
	if e.typ != "" {
		return e.typ
	}
	return elementType(e.root, ctx)
}

func elementType(n *node, ctx string) string {
	if ctx == "" {
		return resultType(n)
	}
	switch n.kind {
	case nMember:
		if n.name == ctx { // a path that starts with its resource type
			return ctx
		}
		t, _ := member(ctx, n.name)
		if t == "*" {
			return ""
		}
		return t
	case nThis:
		return ctx
	case nInvoke:
		return elementType(n.right, elementType(n.left, ctx))
	case nIndex:
		return elementType(n.left, ctx)
	case nCall:
		if sameType[n.name] {
			return ctx
		}
	case nBinary:
		if n.name == "|" {
			if l := elementType(n.left, ctx); l == elementType(n.right, ctx) {
				return l
			}
			return ""
		}
	}
	return resultType(n)
}
