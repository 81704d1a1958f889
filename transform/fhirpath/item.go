package fhirpath

import (
	"math/big"
	"strconv"
	"strings"
	"unsafe"

	"github.com/valyala/fastjson"
)

// Kind is the FHIRPath type of an item.
type Kind uint8

// Item kinds. KindObject items are complex elements or resources backed by
// the parsed JSON; primitives may be backed by JSON or computed.
const (
	KindNone Kind = iota
	KindBool
	KindInteger
	KindDecimal
	KindString
	KindDate
	KindDateTime
	KindTime
	KindObject
)

func (k Kind) String() string {
	return [...]string{"none", "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Object"}[k]
}

// Item is one element of a FHIRPath collection. Items that come from a
// resource point into the fastjson parse and are valid only as long as it.
type Item struct {
	j   *fastjson.Value // backing JSON node, nil for computed values
	s   string          // string, decimal or temporal lexical form; integer text
	i   int64           // integer value; 1/0 for booleans
	k   Kind
	typ string // FHIR type name when known ("Quantity", "dateTime", "Patient")
}

// Kind returns the item's FHIRPath kind.
func (it Item) Kind() Kind { return it.k }

// FHIRType returns the FHIR type recorded for the item (from a choice
// suffix, ofType, a resourceType or a constant), or "".
func (it Item) FHIRType() string { return it.fhirType() }

// fhirType is it.typ, or for an object without one its resourceType.
func (it Item) fhirType() string {
	if it.typ == "" && it.k == KindObject && it.j != nil {
		if rt := it.j.GetStringBytes("resourceType"); rt != nil {
			return b2s(rt)
		}
	}
	return it.typ
}

// Str returns the lexical form of a primitive item: the string itself, the
// decimal or integer text exactly as written, or the temporal text.
func (it Item) Str() string { return it.s }

// Int returns the value of an integer item.
func (it Item) Int() int64 { return it.i }

// Bool returns the value of a boolean item.
func (it Item) Bool() bool { return it.i != 0 }

// JSON returns the backing JSON node, or nil for computed items.
func (it Item) JSON() *fastjson.Value { return it.j }

// String makes a String item.
func String(s string) Item { return Item{s: s, k: KindString} }

// Bool makes a Boolean item.
func Bool(b bool) Item {
	if b {
		return Item{i: 1, k: KindBool}
	}
	return Item{k: KindBool}
}

// Integer makes an Integer item.
func Integer(i int64) Item { return Item{i: i, s: strconv.FormatInt(i, 10), k: KindInteger} }

// Decimal makes a Decimal item from its lexical form, which is kept exactly.
func Decimal(lex string) Item { return Item{s: lex, k: KindDecimal} }

// Temporal makes a Date, DateTime or Time item from its FHIR lexical form.
func Temporal(k Kind, lex string) Item { return Item{s: lex, k: k} }

// WithType returns the item with its FHIR type set to t.
func (it Item) WithType(t string) Item { it.typ = t; return it }

// Resource wraps a parsed resource as the root item of an evaluation.
func Resource(v *fastjson.Value) Item { return Item{j: v, k: KindObject} }

func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// wrap turns a JSON value into an item (arrays are handled by the caller).
// ok is false for JSON null.
func (c *Ctx) wrap(v *fastjson.Value, typ string) (Item, bool) {
	switch v.Type() {
	case fastjson.TypeObject:
		// An object's resourceType is looked up when asked for (fhirType),
		// not here: every element reached by navigation is an object, and
		// the key scan for a resourceType it almost never has was 6% of
		// the default views' evaluation.
		return Item{j: v, k: KindObject, typ: typ}, true
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		it := Item{j: v, s: b2s(b), k: KindString, typ: typ}
		switch typ {
		case "date":
			it.k = KindDate
		case "dateTime", "instant":
			it.k = KindDateTime
		case "time":
			it.k = KindTime
		}
		return it, true
	case fastjson.TypeNumber:
		start := len(c.arena)
		c.arena = v.MarshalTo(c.arena)
		s := b2s(c.arena[start:])
		it := Item{j: v, s: s, k: KindDecimal, typ: typ}
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				it.k, it.i = KindInteger, n
			}
		}
		return it, true
	case fastjson.TypeTrue:
		return Item{j: v, i: 1, k: KindBool, typ: typ}, true
	case fastjson.TypeFalse:
		return Item{j: v, k: KindBool, typ: typ}, true
	}
	return Item{}, false
}

// Ctx holds the scratch state of evaluations: pooled buffers, an arena for
// number text, and dynamic variables. A Ctx is used by one goroutine at a
// time; reusing it across resources keeps evaluation allocation-free.
type Ctx struct {
	pool     [][]Item
	arena    []byte
	vars     []Item
	resource Item
	iterIdx  int // $index inside where/select
	// epoch changes with the resource and the variables: a shared result
	// (see CompileSet) is reused only within one epoch.
	epoch uint64
	memo  []memoEntry
}

// NewCtx returns an empty evaluation context.
func NewCtx() *Ctx { return &Ctx{} }

// Reset prepares c for a new resource: items from earlier evaluations must
// no longer be used.
func (c *Ctx) Reset(resource Item) {
	c.arena = c.arena[:0]
	c.resource = resource
	c.epoch++
}

// SetVar binds dynamic variable slot i (see Options.Vars).
func (c *Ctx) SetVar(i int, v Item) {
	for len(c.vars) <= i {
		c.vars = append(c.vars, Item{})
	}
	c.vars[i] = v
	c.epoch++
}

func (c *Ctx) get() []Item {
	if n := len(c.pool); n > 0 {
		b := c.pool[n-1]
		c.pool = c.pool[:n-1]
		return b[:0]
	}
	return make([]Item, 0, 8)
}

func (c *Ctx) put(b []Item) {
	if cap(b) > 1<<16 {
		return // let huge buffers go
	}
	c.pool = append(c.pool, b)
}

// Buffer returns a scratch collection from c's pool; give it back with
// Release when done. Callers that evaluate many expressions use it to avoid
// allocating result slices.
func (c *Ctx) Buffer() []Item { return c.get() }

// Release returns a buffer obtained from Buffer.
func (c *Ctx) Release(b []Item) { c.put(b) }

// decimal helpers: exact comparison and arithmetic over lexical forms.

func parseRat(s string) (*big.Rat, bool) {
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}

// numCmp compares two numeric lexical forms exactly.
func numCmp(a, b string) (int, bool) {
	if x, ok := fastCmp(a, b); ok {
		return x, true
	}
	ra, ok1 := parseRat(a)
	rb, ok2 := parseRat(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	return ra.Cmp(rb), true
}

// fastCmp compares plain decimal literals (no exponent) without allocating.
func fastCmp(a, b string) (int, bool) {
	if strings.ContainsAny(a, "eE") || strings.ContainsAny(b, "eE") {
		return 0, false
	}
	na, ia, fa, ok1 := splitDec(a)
	nb, ib, fb, ok2 := splitDec(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	zeroA := ia == "" && fa == ""
	zeroB := ib == "" && fb == ""
	if zeroA && zeroB {
		return 0, true
	}
	if na != nb && !zeroA && !zeroB {
		if na {
			return -1, true
		}
		return 1, true
	}
	if zeroA {
		if nb {
			return 1, true
		}
		return -1, true
	}
	if zeroB {
		if na {
			return -1, true
		}
		return 1, true
	}
	mag := 0
	switch {
	case len(ia) != len(ib):
		mag = cmpInt(len(ia), len(ib))
	case ia != ib:
		mag = strings.Compare(ia, ib)
	default:
		mag = strings.Compare(fa, fb)
	}
	if na {
		mag = -mag
	}
	return mag, true
}

func cmpInt(a, b int) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// splitDec splits "-012.3400" into negative, "12", "34".
func splitDec(s string) (neg bool, ip, fp string, ok bool) {
	if s == "" {
		return false, "", "", false
	}
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	ip, fp = s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		ip, fp = s[:i], s[i+1:]
	}
	if ip == "" && fp == "" {
		return false, "", "", false
	}
	for _, c := range ip + fp {
		if c < '0' || c > '9' {
			return false, "", "", false
		}
	}
	ip = strings.TrimLeft(ip, "0")
	fp = strings.TrimRight(fp, "0")
	return neg, ip, fp, true
}

// formatRat renders r exactly when it has a finite decimal expansion and
// with 8 decimal places otherwise (FHIRPath's minimum decimal precision).
func formatRat(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	d := new(big.Int).Set(r.Denom())
	for _, p := range []int64{2, 5} {
		bp := big.NewInt(p)
		m := new(big.Int)
		for {
			q, rem := new(big.Int).QuoRem(d, bp, m)
			if rem.Sign() != 0 {
				break
			}
			d = q
		}
	}
	if d.Cmp(big.NewInt(1)) == 0 {
		for prec := 1; prec < 400; prec++ {
			s := r.FloatString(prec)
			if back, ok := parseRat(s); ok && back.Cmp(r) == 0 {
				return s
			}
		}
	}
	s := r.FloatString(8)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
