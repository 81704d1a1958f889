package fhirpath

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

type callFn = evalFn

// funcSpec describes one FHIRPath function to the compiler.
type funcSpec struct {
	minArgs, maxArgs int
	// typed functions take a type specifier (ofType(Quantity)): a name,
	// not an expression to compile.
	typed bool
	// result is the FHIR type the function is known to yield (see
	// Expr.ResultType), or "" when it depends on the data.
	result string
	build  func(call) callFn
}

// call is what a funcSpec's build gets: the function's name, for messages,
// and its compiled arguments, or for a typed function the type specifier
// ("" when it was omitted).
type call struct {
	name string
	args []evalFn
	typ  string
}

// registry holds the supported FHIRPath functions. It is only read after
// package initialisation, so compilations may share it.
var registry = map[string]funcSpec{
	// Existence.
	"empty":      {result: "boolean", build: emptyFunc},
	"exists":     {maxArgs: 1, result: "boolean", build: lambdaFunc},
	"all":        {minArgs: 1, maxArgs: 1, result: "boolean", build: lambdaFunc},
	"allTrue":    {result: "boolean", build: boolAggregate(true, true)},
	"anyTrue":    {result: "boolean", build: boolAggregate(true, false)},
	"allFalse":   {result: "boolean", build: boolAggregate(false, true)},
	"anyFalse":   {result: "boolean", build: boolAggregate(false, false)},
	"count":      {result: "integer", build: countFunc},
	"distinct":   {build: distinctFunc},
	"isDistinct": {result: "boolean", build: isDistinctFunc},
	"hasValue":   {result: "boolean", build: hasValueFunc},
	"getValue":   {build: getValueFunc},

	// Filtering, projection and types.
	"where":  {minArgs: 1, maxArgs: 1, build: lambdaFunc},
	"select": {minArgs: 1, maxArgs: 1, build: selectFunc},
	"ofType": {minArgs: 1, maxArgs: 1, typed: true, build: ofTypeFunc},
	"is":     {minArgs: 1, maxArgs: 1, typed: true, result: "boolean", build: isFunc},
	"as":     {minArgs: 1, maxArgs: 1, typed: true, build: asFunc},

	// Subsetting and combining.
	"first":   {build: firstFunc},
	"last":    {build: lastFunc},
	"tail":    {build: tailFunc},
	"skip":    {minArgs: 1, maxArgs: 1, build: skipTake(true)},
	"take":    {minArgs: 1, maxArgs: 1, build: skipTake(false)},
	"single":  {build: singleFunc},
	"union":   {minArgs: 1, maxArgs: 1, build: unionFunc},
	"combine": {minArgs: 1, maxArgs: 1, build: combineFunc},

	// Boolean logic and utility.
	"not":   {result: "boolean", build: notFunc},
	"iif":   {minArgs: 2, maxArgs: 3, build: iifFunc},
	"trace": {minArgs: 1, maxArgs: 2, build: traceFunc},

	// Strings.
	"startsWith": {minArgs: 1, maxArgs: 1, result: "boolean", build: stringPredicate(strings.HasPrefix)},
	"endsWith":   {minArgs: 1, maxArgs: 1, result: "boolean", build: stringPredicate(strings.HasSuffix)},
	"contains":   {minArgs: 1, maxArgs: 1, result: "boolean", build: stringPredicate(strings.Contains)},
	"lower":      {result: "string", build: lowerFunc},
	"upper":      {result: "string", build: upperFunc},
	"trim":       {result: "string", build: trimFunc},
	"length":     {result: "integer", build: lengthFunc},
	"toString":   {result: "string", build: toStringFunc},
	"toInteger":  {result: "integer", build: toIntegerFunc},
	"substring":  {minArgs: 1, maxArgs: 2, result: "string", build: substringFunc},
	"join":       {maxArgs: 1, result: "string", build: joinFunc},

	// FHIR and SQL-on-FHIR additions.
	"extension":       {minArgs: 1, maxArgs: 1, build: extensionFunc},
	"lowBoundary":     {maxArgs: 1, build: boundaryFunc(false)},
	"highBoundary":    {maxArgs: 1, build: boundaryFunc(true)},
	"getResourceKey":  {result: "string", build: getResourceKeyFunc},
	"getReferenceKey": {maxArgs: 1, typed: true, result: "string", build: getReferenceKeyFunc},
}

// Functions lists the names of the supported FHIRPath functions.
func Functions() []string {
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	return out
}

// compileCall checks a call against the registry and builds it; the
// registry is consulted here only, never during evaluation.
func (cp *compiler) compileCall(n *node) (callFn, error) {
	spec, ok := registry[n.name]
	if !ok {
		return nil, cp.errf(n, "unknown function %s()", n.name)
	}
	if len(n.args) < spec.minArgs || len(n.args) > spec.maxArgs {
		return nil, cp.errf(n, "%s() takes %d to %d arguments, got %d", n.name, spec.minArgs, spec.maxArgs, len(n.args))
	}
	cl := call{name: n.name}
	if spec.typed {
		if len(n.args) == 1 {
			if cl.typ, ok = typeArg(n.args[0]); !ok {
				return nil, cp.errf(n.args[0], "%s() needs a type name", n.name)
			}
		}
		return spec.build(cl), nil
	}
	cl.args = make([]evalFn, len(n.args))
	for i, a := range n.args {
		f, err := cp.compile(a)
		if err != nil {
			return nil, err
		}
		cl.args[i] = f
	}
	return spec.build(cl), nil
}

func emptyFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, Bool(len(in) == 0)), nil }
}

func countFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, Integer(int64(len(in)))), nil }
}

func firstFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		if len(in) > 0 {
			dst = append(dst, in[0])
		}
		return dst, nil
	}
}

func lastFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		if len(in) > 0 {
			dst = append(dst, in[len(in)-1])
		}
		return dst, nil
	}
}

func tailFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		if len(in) > 1 {
			dst = append(dst, in[1:]...)
		}
		return dst, nil
	}
}

func singleFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := single(in, "single()")
		if ok {
			dst = append(dst, it)
		}
		return dst, err
	}
}

// skipTake builds skip(n) (skip true) or take(n).
func skipTake(skip bool) func(call) callFn {
	return func(cl call) callFn {
		what, arg := cl.name+"()", cl.args[0]
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			k, ok, err := c.intArg(arg, in, what)
			if err != nil || !ok {
				return dst, err
			}
			k = max(0, min(k, int64(len(in))))
			if skip {
				return append(dst, in[k:]...), nil
			}
			return append(dst, in[:k]...), nil
		}
	}
}

func notFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		b, ok, err := asBool(in, "not()")
		if ok {
			dst = append(dst, Bool(!b))
		}
		return dst, err
	}
}

func selectFunc(cl call) callFn {
	proj := cl.args[0]
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		saved := c.iterIdx
		defer func() { c.iterIdx = saved }()
		for i := range in {
			c.iterIdx = i
			var err error
			if dst, err = proj(c, in[i:i+1], dst); err != nil {
				return dst, err
			}
		}
		return dst, nil
	}
}

func iifFunc(cl call) callFn {
	args := cl.args
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
	}
}

// traceFunc passes its input through: there is no trace log to write to.
func traceFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return append(dst, in...), nil }
}

func extensionFunc(cl call) callFn {
	arg := cl.args[0]
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		url, ok, err := c.strArg(arg, in, "extension()")
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
	}
}

func hasValueFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		return append(dst, Bool(len(in) == 1 && in[0].k != KindObject)), nil
	}
}

func getValueFunc(call) callFn {
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		if len(in) == 1 && in[0].k != KindObject {
			dst = append(dst, in[0])
		}
		return dst, nil
	}
}

func joinFunc(cl call) callFn {
	args := cl.args
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
	}
}

// boundaryFunc builds highBoundary() (high true) or lowBoundary(). The
// optional precision argument is accepted and ignored.
func boundaryFunc(high bool) func(call) callFn {
	return func(call) callFn {
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
			for _, it := range in {
				b, ok := boundary(it, high)
				if ok {
					dst = append(dst, b)
				}
			}
			return dst, nil
		}
	}
}

func getResourceKeyFunc(call) callFn {
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
	}
}

// stringPredicate builds startsWith(), endsWith() and contains(): pred
// tests the input string against the argument.
func stringPredicate(pred func(s, arg string) bool) func(call) callFn {
	return func(cl call) callFn {
		what, argFn := cl.name+"()", cl.args[0]
		return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
			it, ok, err := single(in, what)
			if err != nil || !ok {
				return dst, err
			}
			arg, ok, err := c.strArg(argFn, in, what)
			if err != nil || !ok {
				return dst, err
			}
			return append(dst, Bool(pred(it.s, arg))), nil
		}
	}
}

// singlePrimitive is single for the string functions, which yield
// nothing for an object: ok is false then too.
func singlePrimitive(in []Item, what string) (Item, bool, error) {
	it, ok, err := single(in, what)
	return it, ok && it.k != KindObject, err
}

// The string functions call their strings function directly rather than
// through a shared helper taking a func: the indirect call was measurably
// slower.

func lowerFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		if !ok {
			return dst, err
		}
		return append(dst, String(strings.ToLower(it.s))), nil
	}
}

func upperFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		if !ok {
			return dst, err
		}
		return append(dst, String(strings.ToUpper(it.s))), nil
	}
}

func trimFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		if !ok {
			return dst, err
		}
		return append(dst, String(strings.TrimSpace(it.s))), nil
	}
}

func lengthFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		if !ok {
			return dst, err
		}
		return append(dst, Integer(int64(len([]rune(it.s))))), nil
	}
}

func toStringFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		if !ok {
			return dst, err
		}
		if it.k == KindBool {
			return append(dst, String(strconv.FormatBool(it.i != 0))), nil
		}
		return append(dst, String(it.s)), nil
	}
}

func toIntegerFunc(cl call) callFn {
	what := cl.name + "()"
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		it, ok, err := singlePrimitive(in, what)
		switch {
		case !ok:
			return dst, err
		case it.k == KindInteger:
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
}

func substringFunc(cl call) callFn {
	args := cl.args
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
	}
}

func distinctFunc(call) callFn {
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		buf := appendDistinct(c.get(), in)
		defer c.put(buf)
		return append(dst, buf...), nil
	}
}

func isDistinctFunc(call) callFn {
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		buf := appendDistinct(c.get(), in)
		defer c.put(buf)
		return append(dst, Bool(len(buf) == len(in))), nil
	}
}

// boolAggregate builds allTrue(), anyTrue(), allFalse() and anyFalse():
// want is the value looked for, all whether every item must have it.
func boolAggregate(want, all bool) func(call) callFn {
	return func(cl call) callFn {
		name := cl.name
		return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
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
		}
	}
}

func unionFunc(cl call) callFn {
	arg := cl.args[0]
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		other := c.get()
		defer c.put(other)
		other, err := arg(c, in, other)
		if err != nil {
			return dst, err
		}
		return appendDistinct(appendDistinct(dst, in), other), nil
	}
}

func combineFunc(cl call) callFn {
	arg := cl.args[0]
	return func(c *Ctx, in []Item, dst []Item) ([]Item, error) {
		other := c.get()
		defer c.put(other)
		other, err := arg(c, in, other)
		if err != nil {
			return dst, err
		}
		return append(append(dst, in...), other...), nil
	}
}

// lambdaFunc implements functions whose argument is evaluated per item.
func lambdaFunc(cl call) callFn {
	name, args := cl.name, cl.args
	what, isWhere, isExists := name+"()", name == "where", name == "exists"
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
			b, ok, err := asBool(buf, what)
			if err != nil {
				return dst, err
			}
			keep := ok && b
			if keep {
				any = true
				if isWhere {
					dst = append(dst, in[i])
				}
				if isExists {
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

func ofTypeFunc(cl call) callFn {
	t := cl.typ
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
		for _, it := range in {
			if ok, conv := matchType(it, t); ok {
				dst = append(dst, conv)
			}
		}
		return dst, nil
	}
}

func isFunc(cl call) callFn {
	what, t := cl.name+"()", cl.typ
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return typeTest(in, what, t, true, dst) }
}

func asFunc(cl call) callFn {
	what, t := cl.name+"()", cl.typ
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) { return typeTest(in, what, t, false, dst) }
}

// typeTest implements is (is true) and as on a single item, for both the
// functions and the operators; what names it in messages.
func typeTest(in []Item, what, t string, is bool, dst []Item) ([]Item, error) {
	it, ok, err := single(in, what)
	if err != nil || !ok {
		return dst, err
	}
	m, conv := matchType(it, t)
	if is {
		return append(dst, Bool(m)), nil
	}
	if m {
		dst = append(dst, conv)
	}
	return dst, nil
}

func getReferenceKeyFunc(cl call) callFn {
	want := strings.TrimPrefix(cl.typ, "FHIR.")
	return func(_ *Ctx, in []Item, dst []Item) ([]Item, error) {
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
