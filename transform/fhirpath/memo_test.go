package fhirpath

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"
)

// setSrcs share prefixes on their input (name.where(...).first(),
// telecom.where(...)) and inside function arguments (use = 'official',
// which each where() evaluates on other items).
var setSrcs = []string{
	"name.where(use = 'official').first().family",
	"name.where(use = 'official').first().given.join(' ')",
	"name.where(use = 'official').exists()",
	"telecom.where(system = 'phone').value",
	"telecom.where(system = 'phone').count() + %rowIndex",
	"(name.where(use = 'official').first().given | name.given).count()",
	"id",
	"name[1].given",
	"name[1].given.first()",
}

// TestCompileSetMatchesCompile evaluates a set against several resources
// parsed by one reused fastjson.Parser, whose values therefore share
// addresses across resources: only the new epoch of Ctx.Reset tells the
// memo that its results are stale.
func TestCompileSetMatchesCompile(t *testing.T) {
	opts := &Options{Vars: []string{"rowIndex"}}
	set, errs := CompileSet(setSrcs, opts)
	require.Nil(t, errs)
	single := make([]*Expr, len(setSrcs))
	for i, src := range setSrcs {
		var err error
		single[i], err = Compile(src, opts)
		require.NoError(t, err)
	}
	resources := []string{
		patient,
		`{"resourceType":"Patient","id":"p2","name":[{"use":"official","family":"Other","given":["Ann"]},{"given":["B"]}],
		  "telecom":[{"system":"phone","value":"999"}]}`,
		`{"resourceType":"Patient","id":"p3"}`,
		patient,
	}
	var p fastjson.Parser
	c, ref := NewCtx(), NewCtx()
	for _, row := range []int64{0, 3} {
		c.SetVar(0, Integer(row))
		ref.SetVar(0, Integer(row))
		for _, res := range resources {
			v, err := p.Parse(res)
			require.NoError(t, err)
			r := Resource(v)
			c.Reset(r)
			ref.Reset(r)
			for i := range setSrcs {
				want, err := single[i].Eval(ref, []Item{r}, nil)
				require.NoError(t, err)
				got, err := set[i].Eval(c, []Item{r}, nil)
				require.NoError(t, err)
				require.Equal(t, render(want), render(got), "%s on %s, %%rowIndex %d", setSrcs[i], res, row)
			}
		}
	}
}

// TestCompileSetNewInput evaluates a set on one input, then on another
// without a new epoch: a shared result must not cross inputs.
func TestCompileSetNewInput(t *testing.T) {
	set, errs := CompileSet([]string{"coding.first().code", "coding.first().system"}, nil)
	require.Nil(t, errs)
	var p fastjson.Parser
	v, err := p.Parse(`{"a":{"coding":[{"system":"s1","code":"c1"}]},"b":{"coding":[{"system":"s2","code":"c2"}]}}`)
	require.NoError(t, err)
	c := NewCtx()
	c.Reset(Resource(v))
	for _, key := range []string{"a", "b", "a"} {
		focus := []Item{{j: v.Get(key), k: KindObject}}
		code, err := set[0].Eval(c, focus, nil)
		require.NoError(t, err)
		sys, err := set[1].Eval(c, focus, nil)
		require.NoError(t, err)
		n := key[0] - 'a' + '1'
		require.Equal(t, "['c"+string(n)+"']", render(code))
		require.Equal(t, "['s"+string(n)+"']", render(sys))
	}
}

// TestSharedNodes checks what the set shares: the largest common
// expressions on the input, not their parts, and nothing inside a
// function's arguments or with $index.
func TestSharedNodes(t *testing.T) {
	shared := func(srcs ...string) []string {
		roots := make([]*node, len(srcs))
		for i, s := range srcs {
			var err error
			roots[i], err = parse(s)
			require.NoError(t, err)
		}
		seen := map[int]bool{}
		var keys []string
		for _, r := range roots {
			memo := sharedNodes(roots)
			onInput(r, nil, func(n, _ *node) {
				if s, ok := memo[n]; ok && !seen[s] {
					seen[s] = true
					keys = append(keys, nodeKey(n))
				}
			})
		}
		return keys
	}
	require.Equal(t, []string{nodeKey(mustParse(t, "code.coding.first()"))},
		shared("code.coding.first().system", "code.coding.first().code", "status"))
	require.Empty(t, shared("a.where(use = 'x').b", "c.where(use = 'x').d"), "arguments see other inputs")
	require.Empty(t, shared("a.select($index).b", "a.select($index).c"))
	require.Empty(t, shared("a.b", "a.c"), "a bare member is not worth a slot")
	require.Len(t, shared("a.b.c.d", "a.b.c.e", "a.b.f"), 2, "a.b.c, and a.b for a.b.f")
}

func mustParse(t *testing.T, s string) *node {
	n, err := parse(s)
	require.NoError(t, err)
	return n
}

// TestCompileSetErrors reports each bad expression at its index and still
// compiles the others.
func TestCompileSetErrors(t *testing.T) {
	exprs, errs := CompileSet([]string{"a.b", "a.(", "", "nosuch()", "a.b.c"}, nil)
	require.Len(t, errs, 5)
	require.NoError(t, errs[0])
	require.Error(t, errs[1])
	require.Error(t, errs[2])
	require.Error(t, errs[3])
	require.NoError(t, errs[4])
	require.NotNil(t, exprs[0])
	require.Nil(t, exprs[1])
	require.NotNil(t, exprs[4])
}

// BenchmarkCompileSet compares a select's columns compiled one by one and
// as a set, on an Observation.
func BenchmarkCompileSet(b *testing.B) {
	srcs := []string{
		"code.coding.first().system", "code.coding.first().code", "code.coding.first().display", "code.text",
		"value.ofType(Quantity).value", "value.ofType(Quantity).unit", "value.ofType(Quantity).system",
		"value.ofType(Quantity).code", "status", "subject.getReferenceKey(Patient)",
	}
	var p fastjson.Parser
	v, err := p.Parse(observation)
	require.NoError(b, err)
	r := Resource(v)
	for _, mode := range []string{"single", "set"} {
		b.Run(mode, func(b *testing.B) {
			exprs, errs := CompileSet(srcs, nil)
			require.Nil(b, errs)
			if mode == "single" {
				for i, s := range srcs {
					exprs[i], err = Compile(s, nil)
					require.NoError(b, err)
				}
			}
			c := NewCtx()
			focus := []Item{r}
			var buf []Item
			for b.Loop() {
				c.Reset(r)
				for _, e := range exprs {
					buf, _ = e.Eval(c, focus, buf[:0])
				}
			}
		})
	}
}
