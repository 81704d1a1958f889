package fhirpath

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

func (cp *compiler) compileBinary(n *node) (evalFn, error) {
	left, err := cp.compile(n.left)
	if err != nil {
		return nil, err
	}
	right, err := cp.compile(n.right)
	if err != nil {
		return nil, err
	}
	op := n.name
	switch op {
	case "and", "or", "xor", "implies":
		return logicOp(op, left, right), nil
	}
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		a := c.get()
		b := c.get()
		defer func() { c.put(a); c.put(b) }()
		var err error
		if a, err = left(c, focus, a); err != nil {
			return dst, err
		}
		if b, err = right(c, focus, b); err != nil {
			return dst, err
		}
		return binary(op, a, b, dst)
	}, nil
}

func binary(op string, a, b []Item, dst []Item) ([]Item, error) {
	switch op {
	case "=", "!=":
		eq, known := equalColl(a, b)
		if !known {
			return dst, nil
		}
		return append(dst, Bool(eq == (op == "="))), nil
	case "~", "!~":
		eq := equivColl(a, b)
		return append(dst, Bool(eq == (op == "~"))), nil
	case "|":
		dst = appendDistinct(dst, a)
		return appendDistinct(dst, b), nil
	case "in", "contains":
		elem, coll := a, b
		if op == "contains" {
			elem, coll = b, a
		}
		x, ok, err := single(elem, op)
		if err != nil || !ok {
			return dst, err
		}
		for _, y := range coll {
			if eq, known := equalItem(x, y); known && eq {
				return append(dst, Bool(true)), nil
			}
		}
		return append(dst, Bool(false)), nil
	case "&":
		x, _, err := single(a, op)
		if err != nil {
			return dst, err
		}
		y, _, err := single(b, op)
		if err != nil {
			return dst, err
		}
		return append(dst, String(x.s+y.s)), nil
	}
	x, ok1, err := single(a, op)
	if err != nil {
		return dst, err
	}
	y, ok2, err := single(b, op)
	if err != nil || !ok1 || !ok2 {
		return dst, err
	}
	switch op {
	case "<", ">", "<=", ">=":
		cmp, known, err := compareItems(x, y)
		if err != nil || !known {
			return dst, err
		}
		var r bool
		switch op {
		case "<":
			r = cmp < 0
		case ">":
			r = cmp > 0
		case "<=":
			r = cmp <= 0
		default:
			r = cmp >= 0
		}
		return append(dst, Bool(r)), nil
	}
	return arith(op, x, y, dst)
}

// truth is a FHIRPath Boolean operand or result: the empty collection is
// a third value.
type truth uint8

const (
	truthFalse truth = iota
	truthTrue
	truthEmpty
)

// logicRule is a Boolean operator's truth table, indexed [left][right],
// and the left values that decide the result without evaluating the right
// side.
type logicRule struct {
	table   [3][3]truth
	decides [3]bool
}

// logicRules are the FHIRPath Boolean operators. xor decides nothing
// early: its right side is always evaluated, so its errors surface.
var logicRules = map[string]logicRule{
	"and": {
		table: [3][3]truth{
			truthFalse: {truthFalse, truthFalse, truthFalse},
			truthTrue:  {truthFalse, truthTrue, truthEmpty},
			truthEmpty: {truthFalse, truthEmpty, truthEmpty},
		},
		decides: [3]bool{truthFalse: true},
	},
	"or": {
		table: [3][3]truth{
			truthFalse: {truthFalse, truthTrue, truthEmpty},
			truthTrue:  {truthTrue, truthTrue, truthTrue},
			truthEmpty: {truthEmpty, truthTrue, truthEmpty},
		},
		decides: [3]bool{truthTrue: true},
	},
	"xor": {
		table: [3][3]truth{
			truthFalse: {truthFalse, truthTrue, truthEmpty},
			truthTrue:  {truthTrue, truthFalse, truthEmpty},
			truthEmpty: {truthEmpty, truthEmpty, truthEmpty},
		},
	},
	"implies": {
		table: [3][3]truth{
			truthFalse: {truthTrue, truthTrue, truthTrue},
			truthTrue:  {truthFalse, truthTrue, truthEmpty},
			truthEmpty: {truthEmpty, truthTrue, truthEmpty},
		},
		decides: [3]bool{truthFalse: true},
	},
}

// truthOf applies singleton evaluation for a Boolean operand.
func truthOf(in []Item, what string) (truth, error) {
	b, ok, err := asBool(in, what)
	switch {
	case err != nil || !ok:
		return truthEmpty, err
	case b:
		return truthTrue, nil
	}
	return truthFalse, nil
}

func appendTruth(dst []Item, t truth) []Item {
	if t == truthEmpty {
		return dst
	}
	return append(dst, Bool(t == truthTrue))
}

func logicOp(op string, left, right evalFn) evalFn {
	rule := logicRules[op]
	return func(c *Ctx, focus []Item, dst []Item) ([]Item, error) {
		a := c.get()
		defer c.put(a)
		a, err := left(c, focus, a)
		if err != nil {
			return dst, err
		}
		x, err := truthOf(a, op)
		if err != nil {
			return dst, err
		}
		if rule.decides[x] {
			return appendTruth(dst, rule.table[x][truthEmpty]), nil
		}
		b := c.get()
		defer c.put(b)
		if b, err = right(c, focus, b); err != nil {
			return dst, err
		}
		y, err := truthOf(b, op)
		if err != nil {
			return dst, err
		}
		return appendTruth(dst, rule.table[x][y]), nil
	}
}

func isTemporal(it Item) bool { return it.k == KindDate || it.k == KindDateTime || it.k == KindTime }
func isNumber(it Item) bool   { return it.k == KindInteger || it.k == KindDecimal }

// temporalOf parses a temporal item or a string that should be one.
func temporalOf(it Item) (temporal, bool) {
	switch it.k {
	case KindTime:
		t, err := parseTemporal(it.s, KindTime)
		return t, err == nil
	case KindDate, KindDateTime:
		t, err := parseTemporal(it.s, KindDateTime)
		return t, err == nil
	case KindString:
		return guessTemporal(it.s)
	}
	return temporal{}, false
}

// equalItem implements FHIRPath = on two items; known is false when the
// result is empty (temporal values of different precision).
func equalItem(a, b Item) (eq, known bool) {
	switch {
	case isTemporal(a) || isTemporal(b):
		ta, ok1 := temporalOf(a)
		tb, ok2 := temporalOf(b)
		if !ok1 || !ok2 {
			return false, true
		}
		c, ok := compareTemporal(ta, tb)
		if !ok {
			return false, false
		}
		return c == 0, true
	case isNumber(a) || isNumber(b):
		if !isNumber(a) || !isNumber(b) {
			return false, true
		}
		if a.k == KindInteger && b.k == KindInteger {
			return a.i == b.i, true
		}
		c, ok := numCmp(a.s, b.s)
		return ok && c == 0, true
	case a.k == KindBool || b.k == KindBool:
		return a.k == b.k && a.i == b.i, true
	case a.k == KindString && b.k == KindString:
		return a.s == b.s, true
	case a.k == KindObject && b.k == KindObject:
		if a.j == b.j {
			return true, true
		}
		return string(a.j.MarshalTo(nil)) == string(b.j.MarshalTo(nil)), true
	}
	return false, true
}

func equalColl(a, b []Item) (eq, known bool) {
	if len(a) == 0 || len(b) == 0 {
		return false, false
	}
	if len(a) != len(b) {
		return false, true
	}
	for i := range a {
		eq, known := equalItem(a[i], b[i])
		if !known || !eq {
			return eq, known
		}
	}
	return true, true
}

func equivColl(a, b []Item) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.k == KindString && y.k == KindString {
			if !strings.EqualFold(strings.Join(strings.Fields(x.s), " "), strings.Join(strings.Fields(y.s), " ")) {
				return false
			}
			continue
		}
		if eq, known := equalItem(x, y); !known || !eq {
			return false
		}
	}
	return true
}

func appendDistinct(dst []Item, in []Item) []Item {
outer:
	for _, it := range in {
		for _, d := range dst {
			if eq, known := equalItem(it, d); known && eq {
				continue outer
			}
		}
		dst = append(dst, it)
	}
	return dst
}

// compareItems orders two items for < > <= >=.
func compareItems(a, b Item) (int, bool, error) {
	switch {
	case isNumber(a) && isNumber(b):
		if a.k == KindInteger && b.k == KindInteger {
			return cmpInt64(a.i, b.i), true, nil
		}
		c, ok := numCmp(a.s, b.s)
		if !ok {
			return 0, false, fmt.Errorf("fhirpath: cannot compare %q with %q", a.s, b.s)
		}
		return c, true, nil
	case isTemporal(a) || isTemporal(b):
		ta, ok1 := temporalOf(a)
		tb, ok2 := temporalOf(b)
		if !ok1 || !ok2 {
			return 0, false, fmt.Errorf("fhirpath: cannot compare %s %q with %s %q", a.k, a.s, b.k, b.s)
		}
		c, ok := compareTemporal(ta, tb)
		return c, ok, nil
	case a.k == KindString && b.k == KindString:
		return strings.Compare(a.s, b.s), true, nil
	}
	return 0, false, fmt.Errorf("fhirpath: cannot compare %s with %s", a.k, b.k)
}

func cmpInt64(a, b int64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

func negate(it Item, dst []Item) ([]Item, error) {
	switch it.k {
	case KindInteger:
		return append(dst, Integer(-it.i)), nil
	case KindDecimal:
		if strings.HasPrefix(it.s, "-") {
			return append(dst, Decimal(it.s[1:])), nil
		}
		return append(dst, Decimal("-"+it.s)), nil
	}
	return dst, fmt.Errorf("fhirpath: cannot negate %s", it.k)
}

// arith applies an arithmetic operator. Integer arithmetic is exact
// except for '/': overflow is an error rather than a wrapped result, and
// division by zero is empty. The rest goes to decimalArith.
func arith(op string, x, y Item, dst []Item) ([]Item, error) {
	if op == "+" && x.k == KindString && y.k == KindString {
		return append(dst, String(x.s+y.s)), nil
	}
	if !isNumber(x) || !isNumber(y) {
		return dst, fmt.Errorf("fhirpath: operator %s is not defined for %s and %s", op, x.k, y.k)
	}
	if x.k == KindInteger && y.k == KindInteger {
		a, b := x.i, y.i
		switch op {
		case "+":
			if r := a + b; (r > a) == (b > 0) {
				return append(dst, Integer(r)), nil
			}
		case "-":
			if r := a - b; (r < a) == (b > 0) {
				return append(dst, Integer(r)), nil
			}
		case "*":
			if r, ok := mulInt64(a, b); ok {
				return append(dst, Integer(r)), nil
			}
		case "div":
			if b == 0 {
				return dst, nil
			}
			return append(dst, Integer(a/b)), nil
		case "mod":
			if b == 0 {
				return dst, nil
			}
			return append(dst, Integer(a%b)), nil
		}
		if op != "/" {
			return dst, fmt.Errorf("fhirpath: integer overflow in %d %s %d", a, op, b)
		}
	}
	return decimalArith(op, x.s, y.s, dst)
}

// mulInt64 multiplies a and b; ok is false on overflow.
func mulInt64(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	r := a * b
	// r/b == a misses MinInt64 * -1, which wraps to MinInt64.
	if r/b != a || (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64) {
		return 0, false
	}
	return r, true
}

// decimalArith is exact arithmetic on the lexical forms of two numbers;
// division by zero is empty.
func decimalArith(op, x, y string, dst []Item) ([]Item, error) {
	ra, ok1 := parseRat(x)
	rb, ok2 := parseRat(y)
	if !ok1 || !ok2 {
		return dst, fmt.Errorf("fhirpath: bad number in arithmetic")
	}
	r := new(big.Rat)
	switch op {
	case "+":
		r.Add(ra, rb)
	case "-":
		r.Sub(ra, rb)
	case "*":
		r.Mul(ra, rb)
	case "/", "div", "mod":
		if rb.Sign() == 0 {
			return dst, nil
		}
		r.Quo(ra, rb)
		if op == "div" {
			q := new(big.Int).Quo(r.Num(), r.Denom())
			return append(dst, Decimal(q.String()).asInteger()), nil
		}
		if op == "mod" {
			q := new(big.Int).Quo(r.Num(), r.Denom())
			r.Sub(ra, new(big.Rat).Mul(rb, new(big.Rat).SetInt(q)))
		}
	default:
		return dst, fmt.Errorf("fhirpath: unknown operator %s", op)
	}
	return append(dst, Decimal(formatRat(r))), nil
}

func (it Item) asInteger() Item {
	var n int64
	if _, err := fmt.Sscan(it.s, &n); err == nil {
		return Integer(n)
	}
	return it
}

// matchType reports whether it is of type t (ofType/is/as) and returns the
// item with its type recorded.
func matchType(it Item, t string) (bool, Item) {
	t = strings.TrimPrefix(strings.TrimPrefix(t, "FHIR."), "System.")
	if typ := it.fhirType(); typ != "" {
		return matchKnownType(it.k, typ, t), it
	}
	switch it.k {
	case KindBool:
		return t == "boolean" || t == "Boolean", it.WithType("boolean")
	case KindInteger:
		return matchInteger(it, t)
	case KindDecimal:
		return t == "decimal" || t == "Decimal", it.WithType("decimal")
	case KindDate:
		return t == "date" || t == "Date", it
	case KindDateTime:
		return t == "dateTime" || t == "DateTime" || t == "instant", it
	case KindTime:
		return t == "time" || t == "Time", it
	case KindString:
		k, ok := stringKind(it.s, t)
		if !ok {
			return false, it
		}
		it.k = k
		return true, it.WithType(typeName(t))
	}
	return false, it
}

// matchKnownType matches an item of kind k whose FHIR type typ is
// recorded.
func matchKnownType(k Kind, typ, t string) bool {
	if strings.EqualFold(typ, t) {
		return true
	}
	switch t { // System types match FHIR types by kind
	case "String":
		return k == KindString
	case "Integer", "Decimal", "Boolean", "Date", "DateTime", "Time":
		return k.String() == t
	}
	return false
}

// matchInteger matches an untyped integer, which is also a positiveInt or
// unsignedInt when its value allows.
func matchInteger(it Item, t string) (bool, Item) {
	switch t {
	case "integer", "Integer", "integer64":
		return true, it.WithType(typeName(t))
	case "unsignedInt":
		return it.i >= 0, it.WithType(t)
	case "positiveInt":
		return it.i > 0, it.WithType(t)
	}
	return false, it
}

// stringKind reports whether an untyped string s is of type t: any string
// type, or a temporal type when s parses as one. k is the kind s is then
// read as.
func stringKind(s, t string) (k Kind, ok bool) {
	if isStringType(t) || t == "String" {
		return KindString, true
	}
	var want Kind
	switch t {
	case "date", "Date":
		want = KindDate
	case "dateTime", "DateTime", "instant":
		want = KindDateTime
	case "time", "Time":
		want = KindTime
	default:
		return 0, false
	}
	tm, ok := guessTemporal(s)
	if !ok || (want == KindTime) != tm.timeOnly {
		return 0, false
	}
	if want == KindDate && tm.k != KindDate {
		return 0, false
	}
	return want, true
}
