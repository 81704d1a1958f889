package fhirpath

import (
	"fmt"
	"strings"
)

type nodeKind uint8

const (
	nLit      nodeKind = iota // literal
	nEmpty                    // {}
	nMember                   // identifier: member access on the input
	nCall                     // function call on the input
	nVar                      // %name
	nThis                     // $this
	nIndexVar                 // $index
	nInvoke                   // left.right
	nIndex                    // left[args[0]]
	nBinary                   // left op right
	nUnary                    // op left
	nTypeOp                   // left is/as type
)

type node struct {
	kind        nodeKind
	name        string // member, function, variable, operator or type name
	lit         Item
	left, right *node
	args        []*node
	pos         int
}

// maxDepth bounds expression nesting so that hostile input cannot exhaust
// the stack.
const maxDepth = 200

type parser struct {
	src   string
	toks  []token
	p     int
	depth int
}

// parse turns src into an AST.
func parse(src string) (*node, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	ps := &parser{src: src, toks: toks}
	n, err := ps.expr(0)
	if err != nil {
		return nil, err
	}
	if t := ps.peek(); t.kind != tEOF {
		return nil, ps.errf(t.pos, "unexpected %q", t.text)
	}
	return n, nil
}

func (ps *parser) peek() token { return ps.toks[ps.p] }
func (ps *parser) next() token {
	t := ps.toks[ps.p]
	if t.kind != tEOF {
		ps.p++
	}
	return t
}

func (ps *parser) errf(pos int, format string, a ...any) error {
	return &SyntaxError{Expr: ps.src, Pos: pos, Msg: fmt.Sprintf(format, a...)}
}

func (ps *parser) isOp(s string) bool {
	t := ps.peek()
	return t.kind == tOp && t.text == s
}

func (ps *parser) expect(s string) error {
	t := ps.next()
	if t.kind != tOp || t.text != s {
		if t.kind == tEOF {
			return ps.errf(t.pos, "expected %q, found end of expression", s)
		}
		return ps.errf(t.pos, "expected %q, found %q", s, t.text)
	}
	return nil
}

// binding powers, low to high (FHIRPath operator precedence).
func infixPower(t token) int {
	switch t.kind {
	case tIdent:
		switch t.text {
		case "implies":
			return 1
		case "or", "xor":
			return 2
		case "and":
			return 3
		case "in", "contains":
			return 4
		case "is", "as":
			return 8
		case "div", "mod":
			return 10
		}
	case tOp:
		switch t.text {
		case "=", "~", "!=", "!~":
			return 5
		case "<", ">", "<=", ">=":
			return 6
		case "|":
			return 7
		case "+", "-", "&":
			return 9
		case "*", "/":
			return 10
		}
	}
	return 0
}

func (ps *parser) expr(minPower int) (*node, error) {
	ps.depth++
	defer func() { ps.depth-- }()
	if ps.depth > maxDepth {
		return nil, ps.errf(ps.peek().pos, "expression nested too deeply")
	}
	left, err := ps.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := ps.peek()
		pw := infixPower(t)
		if pw == 0 || pw <= minPower {
			return left, nil
		}
		ps.next()
		if t.text == "is" || t.text == "as" {
			name, err := ps.typeSpec()
			if err != nil {
				return nil, err
			}
			left = &node{kind: nTypeOp, name: t.text, left: left, lit: String(name), pos: t.pos}
			continue
		}
		right, err := ps.expr(pw)
		if err != nil {
			return nil, err
		}
		left = &node{kind: nBinary, name: t.text, left: left, right: right, pos: t.pos}
	}
}

// typeSpec reads a possibly qualified type name (FHIR.Quantity, System.String).
func (ps *parser) typeSpec() (string, error) {
	t := ps.next()
	if t.kind != tIdent {
		return "", ps.errf(t.pos, "expected a type name")
	}
	name := t.text
	if ps.isOp(".") && ps.toks[ps.p+1].kind == tIdent {
		ps.next()
		name += "." + ps.next().text
	}
	return name, nil
}

func (ps *parser) unary() (*node, error) {
	t := ps.peek()
	if t.kind == tOp && (t.text == "+" || t.text == "-") {
		ps.next()
		ps.depth++
		defer func() { ps.depth-- }()
		if ps.depth > maxDepth {
			return nil, ps.errf(t.pos, "expression nested too deeply")
		}
		operand, err := ps.unary()
		if err != nil {
			return nil, err
		}
		if operand.kind == nLit && (operand.lit.k == KindInteger || operand.lit.k == KindDecimal) && t.text == "-" {
			if operand.lit.k == KindInteger {
				return &node{kind: nLit, lit: Integer(-operand.lit.i), pos: t.pos}, nil
			}
			return &node{kind: nLit, lit: Decimal("-" + operand.lit.s), pos: t.pos}, nil
		}
		return &node{kind: nUnary, name: t.text, left: operand, pos: t.pos}, nil
	}
	term, err := ps.term()
	if err != nil {
		return nil, err
	}
	return ps.postfix(term)
}

func (ps *parser) postfix(left *node) (*node, error) {
	for {
		t := ps.peek()
		switch {
		case t.kind == tOp && t.text == ".":
			ps.next()
			id := ps.next()
			if id.kind != tIdent {
				return nil, ps.errf(id.pos, "expected a name after '.'")
			}
			right, err := ps.memberOrCall(id)
			if err != nil {
				return nil, err
			}
			left = &node{kind: nInvoke, left: left, right: right, pos: t.pos}
		case t.kind == tOp && t.text == "[":
			ps.next()
			idx, err := ps.expr(0)
			if err != nil {
				return nil, err
			}
			if err := ps.expect("]"); err != nil {
				return nil, err
			}
			left = &node{kind: nIndex, left: left, args: []*node{idx}, pos: t.pos}
		default:
			return left, nil
		}
	}
}

func (ps *parser) memberOrCall(id token) (*node, error) {
	if !ps.isOp("(") {
		return &node{kind: nMember, name: id.text, pos: id.pos}, nil
	}
	ps.next()
	n := &node{kind: nCall, name: id.text, pos: id.pos}
	if ps.isOp(")") {
		ps.next()
		return n, nil
	}
	for {
		a, err := ps.expr(0)
		if err != nil {
			return nil, err
		}
		n.args = append(n.args, a)
		if ps.isOp(",") {
			ps.next()
			continue
		}
		if err := ps.expect(")"); err != nil {
			return nil, err
		}
		return n, nil
	}
}

var calendarUnits = map[string]string{
	"year": "a", "years": "a", "month": "mo", "months": "mo", "week": "wk", "weeks": "wk",
	"day": "d", "days": "d", "hour": "h", "hours": "h", "minute": "min", "minutes": "min",
	"second": "s", "seconds": "s", "millisecond": "ms", "milliseconds": "ms",
}

func (ps *parser) term() (*node, error) {
	t := ps.next()
	switch t.kind {
	case tEOF:
		return nil, ps.errf(t.pos, "unexpected end of expression")
	case tString:
		return &node{kind: nLit, lit: String(t.text), pos: t.pos}, nil
	case tNumber:
		var lit Item
		if strings.Contains(t.text, ".") {
			lit = Decimal(t.text)
		} else {
			var n int64
			for _, c := range t.text {
				if n > (1<<63-1)/10-10 {
					return nil, ps.errf(t.pos, "integer literal %s out of range", t.text)
				}
				n = n*10 + int64(c-'0')
			}
			lit = Integer(n)
		}
		// A quantity literal: 5 'mg' or 4 days. Only its number is kept
		// (quantity arithmetic is out of scope), recording the unit as type.
		if nt := ps.peek(); nt.kind == tString {
			ps.next()
			lit.typ = "Quantity"
		} else if nt.kind == tIdent && calendarUnits[nt.text] != "" {
			ps.next()
			lit.typ = "Quantity"
		}
		return &node{kind: nLit, lit: lit, pos: t.pos}, nil
	case tDate:
		k, err := temporalLiteralKind(t.text)
		if err != nil {
			return nil, ps.errf(t.pos, "%v", err)
		}
		text := t.text
		if k == KindTime {
			text = text[1:]
		}
		return &node{kind: nLit, lit: Temporal(k, text), pos: t.pos}, nil
	case tVar:
		return &node{kind: nVar, name: t.text, pos: t.pos}, nil
	case tSpecial:
		if t.text == "$this" {
			return &node{kind: nThis, pos: t.pos}, nil
		}
		if t.text == "$index" {
			return &node{kind: nIndexVar, pos: t.pos}, nil
		}
		return nil, ps.errf(t.pos, "%s is only valid inside aggregate()", t.text)
	case tIdent:
		switch t.text {
		case "true":
			return &node{kind: nLit, lit: Bool(true), pos: t.pos}, nil
		case "false":
			return &node{kind: nLit, lit: Bool(false), pos: t.pos}, nil
		}
		return ps.memberOrCall(t)
	case tOp:
		switch t.text {
		case "(":
			e, err := ps.expr(0)
			if err != nil {
				return nil, err
			}
			if err := ps.expect(")"); err != nil {
				return nil, err
			}
			return e, nil
		case "{}":
			return &node{kind: nEmpty, pos: t.pos}, nil
		}
	}
	return nil, ps.errf(t.pos, "unexpected %q", t.text)
}
