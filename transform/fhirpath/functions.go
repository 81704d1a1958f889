package fhirpath

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

type callFn = evalFn

// arity of each supported function: min and max argument counts.
var arity = map[string][2]int{
	"empty": {0, 0}, "exists": {0, 1}, "not": {0, 0}, "first": {0, 0}, "last": {0, 0},
	"tail": {0, 0}, "skip": {1, 1}, "take": {1, 1}, "count": {0, 0}, "single": {0, 0},
	"where": {1, 1}, "select": {1, 1}, "all": {1, 1}, "ofType": {1, 1}, "is": {1, 1}, "as": {1, 1},
	"iif": {2, 3}, "extension": {1, 1}, "hasValue": {0, 0}, "join": {0, 1},
	"lowBoundary": {0, 1}, "highBoundary": {0, 1}, "getResourceKey": {0, 0}, "getReferenceKey": {0, 1},
	"startsWith": {1, 1}, "endsWith": {1, 1}, "contains": {1, 1}, "lower": {0, 0}, "upper": {0, 0},
	"length": {0, 0}, "substring": {1, 2}, "toString": {0, 0}, "toInteger": {0, 0}, "trim": {0, 0},
	"distinct": {0, 0}, "isDistinct": {0, 0}, "allTrue": {0, 0}, "anyTrue": {0, 0}, "allFalse": {0, 0},
	"anyFalse": {0, 0}, "union": {1, 1}, "combine": {1, 1}, "trace": {1, 2}, "getValue": {0, 0},
}

// Functions lists the names of the supported FHIRPath functions.
func Functions() []string {
	out := make([]string, 0, len(arity))
	for k := range arity {
		out = append(out, k)
	}
	return out
}

func (cp *compiler) compileCall(n *node) (callFn, error) {
	ar, ok := arity[n.name]
	if !ok {
		return nil, cp.errf(n, "unknown function %s()", n.name)
	}
	if len(n.args) < ar[0] || len(n.args) > ar[1] {
		return nil, cp.errf(n, "%s() takes %d to %d arguments, got %d", n.name, ar[0], ar[1], len(n.args))
	}
	// Type-specifier arguments are names, not expressions.
	switch n.name {
	case "ofType", "is", "as", "getReferenceKey":
		t := ""
		if len(n.args) == 1 {
			var ok bool
			if t, ok = typeArg(n.args[0]); !ok {
				return nil, cp.errf(n.args[0], "%s() needs a type name", n.name)
			}
		}
		return typeFunc(n.name, t), nil
	}
	args := make([]evalFn, len(n.args))
	for i, a := range n.args {
		f, err := cp.compile(a)
		if err != nil {
			return nil, err
		}
		args[i] = f
	}
	name := n.name
	switch name {
	case "empty":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, Bool(len(in) == 0)), nil }, nil
	case "count":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, Integer(int64(len(in)))), nil }, nil
	case "first":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			if len(in) > 0 {
				dst = append(dst, in[0])
			}
			return dst, nil
		}, nil
	case "last":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			if len(in) > 0 {
				dst = append(dst, in[len(in)-1])
			}
			return dst, nil
		}, nil
	case "tail":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			if len(in) > 1 {
				dst = append(dst, in[1:]...)
			}
			return dst, nil
		}, nil
	case "single":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			it, ok, err := single(in, "single()")
			if ok {
				dst = append(dst, it)
			}
			return dst, err
		}, nil
	case "skip", "take":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			k, ok, err := c.intArg(args[0], in, name+"()")
			if err != nil || !ok {
				return dst, err
			}
			k = max(0, min(k, int64(len(in))))
			if name == "skip" {
				return append(dst, in[k:]...), nil
			}
			return append(dst, in[:k]...), nil
		}, nil
	case "not":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			b, ok, err := asBool(in, "not()")
			if ok {
				dst = append(dst, Bool(!b))
			}
			return dst, err
		}, nil
	case "exists", "where", "all":
		return lambdaFunc(name, args), nil
	case "select":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			saved := c.iterIdx
			defer func() { c.iterIdx = saved }()
			for i := range in {
				c.iterIdx = i
				var err error
				if dst, err = args[0](c, in[i:i+1], dst); err != nil {
					return dst, err
				}
			}
			return dst, nil
		}, nil
	case "iif":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			buf := c.get()
			defer c.put(buf)
			buf, err := args[0](c, in, buf)
			if err != nil {
				return dst, err
			}
			b, ok, err := asBool(buf, "iif()")
			if err != nil {
				return dst, err
			}
			if ok && b {
				return args[1](c, in, dst)
			}
			if len(args) == 3 {
				return args[2](c, in, dst)
			}
			return dst, nil
		}, nil
	case "extension":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			url, ok, err := c.strArg(args[0], in, "extension()")
			if err != nil || !ok {
				return dst, err
			}
			for _, it := range in {
				if it.k != KindObject {
					continue
				}
				for _, e := range it.j.GetArray("extension") {
					if b2s(e.GetStringBytes("url")) == url {
						if x, ok := c.wrap(e, "Extension"); ok {
							dst = append(dst, x)
						}
					}
				}
			}
			return dst, nil
		}, nil
	case "hasValue":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			return append(dst, Bool(len(in) == 1 && in[0].k != KindObject)), nil
		}, nil
	case "getValue":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			if len(in) == 1 && in[0].k != KindObject {
				dst = append(dst, in[0])
			}
			return dst, nil
		}, nil
	case "join":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			sep := ""
			if len(args) == 1 {
				s, _, err := c.strArg(args[0], in, "join()")
				if err != nil {
					return dst, err
				}
				sep = s
			}
			if len(in) == 0 {
				return dst, nil
			}
			var b strings.Builder
			for i, it := range in {
				if it.k == KindObject {
					return dst, fmt.Errorf("fhirpath: join() needs strings, got an object")
				}
				if i > 0 {
					b.WriteString(sep)
				}
				b.WriteString(it.s)
			}
			return append(dst, String(b.String())), nil
		}, nil
	case "lowBoundary", "highBoundary":
		high := name == "highBoundary"
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			for _, it := range in {
				b, ok := boundary(it, high)
				if ok {
					dst = append(dst, b)
				}
			}
			return dst, nil
		}, nil
	case "getResourceKey":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			for _, it := range in {
				if it.k != KindObject || it.j.Get("resourceType") == nil {
					continue
				}
				if id := it.j.Get("id"); id != nil {
					if x, ok := c.wrap(id, "id"); ok {
						dst = append(dst, x)
					}
				}
			}
			return dst, nil
		}, nil
	case "startsWith", "endsWith", "contains":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			it, ok, err := single(in, name+"()")
			if err != nil || !ok {
				return dst, err
			}
			arg, ok, err := c.strArg(args[0], in, name+"()")
			if err != nil || !ok {
				return dst, err
			}
			var r bool
			switch name {
			case "startsWith":
				r = strings.HasPrefix(it.s, arg)
			case "endsWith":
				r = strings.HasSuffix(it.s, arg)
			default:
				r = strings.Contains(it.s, arg)
			}
			return append(dst, Bool(r)), nil
		}, nil
	case "lower", "upper", "trim", "toString", "length", "toInteger":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			it, ok, err := single(in, name+"()")
			if err != nil || !ok || it.k == KindObject {
				return dst, err
			}
			switch name {
			case "lower":
				return append(dst, String(strings.ToLower(it.s))), nil
			case "upper":
				return append(dst, String(strings.ToUpper(it.s))), nil
			case "trim":
				return append(dst, String(strings.TrimSpace(it.s))), nil
			case "length":
				return append(dst, Integer(int64(len([]rune(it.s))))), nil
			case "toInteger":
				if it.k == KindInteger {
					return append(dst, it), nil
				}
				if n, err := strconv.ParseInt(it.s, 10, 64); err == nil && it.k == KindString {
					return append(dst, Integer(n)), nil
				}
				if it.k == KindBool {
					return append(dst, Integer(it.i)), nil
				}
				return dst, nil
			}
			if it.k == KindBool {
				return append(dst, String(strconv.FormatBool(it.i != 0))), nil
			}
			return append(dst, String(it.s)), nil
		}, nil
	case "substring":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			it, ok, err := single(in, "substring()")
			if err != nil || !ok || it.k == KindObject {
				return dst, err
			}
			r := []rune(it.s)
			start, ok, err := c.intArg(args[0], in, "substring()")
			if err != nil || !ok || start < 0 || start >= int64(len(r)) {
				return dst, err
			}
			end := int64(len(r))
			if len(args) == 2 {
				l, ok, err := c.intArg(args[1], in, "substring()")
				if err != nil {
					return dst, err
				}
				if ok {
					end = min(end, start+max(l, 0))
				}
			}
			return append(dst, String(string(r[start:end]))), nil
		}, nil
	case "distinct", "isDistinct":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			buf := appendDistinct(c.get(), in)
			defer c.put(buf)
			if name == "isDistinct" {
				return append(dst, Bool(len(buf) == len(in))), nil
			}
			return append(dst, buf...), nil
		}, nil
	case "allTrue", "anyTrue", "allFalse", "anyFalse":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			want := name == "allTrue" || name == "anyTrue"
			all := name[:3] == "all"
			res := all
			for _, it := range in {
				if it.k != KindBool {
					return dst, fmt.Errorf("fhirpath: %s() needs booleans", name)
				}
				hit := (it.i != 0) == want
				if all && !hit {
					res = false
				}
				if !all && hit {
					res = true
				}
			}
			return append(dst, Bool(res)), nil
		}, nil
	case "union", "combine":
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			other := c.get()
			defer c.put(other)
			other, err := args[0](c, in, other)
			if err != nil {
				return dst, err
			}
			if name == "combine" {
				return append(append(dst, in...), other...), nil
			}
			return appendDistinct(appendDistinct(dst, in), other), nil
		}, nil
	case "trace":
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, in...), nil }, nil
	}
	return nil, cp.errf(n, "unknown function %s()", n.name)
}

// lambdaFunc implements functions whose argument is evaluated per item.
func lambdaFunc(name string, args []evalFn) callFn {
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		if len(args) == 0 { // exists()
			return append(dst, Bool(len(in) > 0)), nil
		}
		saved := c.iterIdx
		defer func() { c.iterIdx = saved }()
		buf := c.get()
		defer c.put(buf)
		any, all := false, true
		for i := range in {
			c.iterIdx = i
			var err error
			buf, err = args[0](c, in[i:i+1], buf[:0])
			if err != nil {
				return dst, err
			}
			b, ok, err := asBool(buf, name+"()")
			if err != nil {
				return dst, err
			}
			keep := ok && b
			if keep {
				any = true
				if name == "where" {
					dst = append(dst, in[i])
				}
				if name == "exists" {
					break
				}
			} else {
				all = false
			}
		}
		switch name {
		case "exists":
			return append(dst, Bool(any)), nil
		case "all":
			return append(dst, Bool(all)), nil
		}
		return dst, nil
	}
}

func typeFunc(name, t string) callFn {
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		switch name {
		case "ofType":
			for _, it := range in {
				if ok, conv := matchType(it, t); ok {
					dst = append(dst, conv)
				}
			}
			return dst, nil
		case "is", "as":
			it, ok, err := single(in, name+"()")
			if err != nil || !ok {
				return dst, err
			}
			m, conv := matchType(it, t)
			if name == "is" {
				return append(dst, Bool(m)), nil
			}
			if m {
				dst = append(dst, conv)
			}
			return dst, nil
		}
		// getReferenceKey
		want := strings.TrimPrefix(t, "FHIR.")
		for _, it := range in {
			if it.k != KindObject {
				continue
			}
			typ, id, ok := referenceKey(it)
			if !ok || (want != "" && typ != want) {
				continue
			}
			dst = append(dst, String(id).WithType("id"))
		}
		return dst, nil
	}
}

// referenceKey parses Reference.reference into (type, id). It accepts
// relative (Type/id), absolute (http://x/Type/id) and versioned
// (.../_history/n) references, and urn:uuid: references (type from
// Reference.type when present).
func referenceKey(it Item) (typ, id string, ok bool) {
	ref := b2s(it.j.GetStringBytes("reference"))
	if ref == "" || ref[0] == '#' {
		return "", "", false
	}
	if rest, found := strings.CutPrefix(ref, "urn:uuid:"); found {
		return b2s(it.j.GetStringBytes("type")), rest, rest != ""
	}
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndexByte(ref, '/')
	if slash <= 0 || slash == len(ref)-1 {
		return "", "", false
	}
	id = ref[slash+1:]
	typ = ref[:slash]
	if s := strings.LastIndexByte(typ, '/'); s >= 0 {
		typ = typ[s+1:]
	}
	if !IsResourceType(typ) && typ != "" && (typ[0] < 'A' || typ[0] > 'Z') {
		return "", "", false
	}
	return typ, id, true
}

// boundary implements lowBoundary()/highBoundary() for decimals, dates,
// dateTimes and times.
func boundary(it Item, high bool) (Item, bool) {
	switch {
	case isNumber(it):
		s, ok := decimalBoundary(it.s, high)
		if !ok {
			return Item{}, false
		}
		return Decimal(s), true
	case it.k == KindString || isTemporal(it):
		var t temporal
		var ok bool
		switch it.typ {
		case "date":
			tt, err := parseTemporal(it.s, KindDate)
			t, ok = tt, err == nil && tt.k == KindDate
		case "time":
			tt, err := parseTemporal(it.s, KindTime)
			t, ok = tt, err == nil
		default:
			t, ok = temporalOf(it)
		}
		if !ok {
			return Item{}, false
		}
		switch {
		case it.k == KindDateTime || it.typ == "dateTime" || it.typ == "instant":
			t.k = KindDateTime
		case t.timeOnly:
			t.k = KindTime
		}
		return Temporal(t.k, t.boundary(high)), true
	}
	return Item{}, false
}

// decimalBoundary widens a decimal by half a unit of its last digit:
// 1.0 → 0.95 / 1.05.
func decimalBoundary(s string, high bool) (string, bool) {
	if strings.ContainsAny(s, "eE") {
		return "", false
	}
	scale := 0
	if i := strings.IndexByte(s, '.'); i >= 0 {
		scale = len(s) - i - 1
	}
	u, ok := new(big.Int).SetString(strings.Replace(s, ".", "", 1), 10)
	if !ok {
		return "", false
	}
	u.Mul(u, big.NewInt(10))
	if high {
		u.Add(u, big.NewInt(5))
	} else {
		u.Sub(u, big.NewInt(5))
	}
	return formatScaled(u, scale+1), true
}

func formatScaled(u *big.Int, scale int) string {
	neg := u.Sign() < 0
	digits := new(big.Int).Abs(u).String()
	for len(digits) <= scale {
		digits = "0" + digits
	}
	out := digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	if neg {
		out = "-" + out
	}
	return out
}
