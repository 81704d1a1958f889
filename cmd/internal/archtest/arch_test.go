// Package archtest holds the test that keeps the house one-way: every
// package of the module may import only the layers ARCHITECTURE.md allows
// it, in its code and in its tests. golangci-lint's depguard checks the
// same rules in CI; this test makes them part of go test ./....
package archtest

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/fhirferry/fhirferry/"

// allowed lists, per package (or package tree ending in "/..."), the
// module packages it may import. The most specific entry applies. Every
// package may import itself and its own sub-packages' internal helpers
// that the list names.
var allowed = []struct {
	pkg     string
	imports []string
}{
	{"configs", nil},
	{"schemas/...", []string{"schemas/...", "configs"}},
	{"transform/...", []string{"transform/...", "schemas/...", "configs"}},
	{"fetch/...", []string{"fetch/...", "schemas/...", "configs"}},
	{"sinks", []string{"schemas/...", "configs"}},
	{"sinks/internal/...", []string{"sinks", "sinks/internal/...", "schemas/...", "configs"}},
	{"sinks/sinktest", []string{"sinks", "schemas/...", "configs"}},
	{"sinks/duckdb", []string{"sinks", "sinks/internal/...", "sinks/sinktest", "schemas/...", "configs"}},
	{"sinks/postgres", []string{"sinks", "sinks/internal/...", "sinks/sinktest", "schemas/...", "configs"}},
	{"sinks/parquet", []string{"sinks", "sinks/internal/...", "sinks/sinktest", "schemas/...", "configs"}},
	{"sinks/builtin", []string{"sinks", "sinks/duckdb", "sinks/postgres", "sinks/parquet", "configs"}},
	// The orchestrator: the stages through their contracts, no concrete sink.
	{"pipeline", []string{"fetch/...", "transform/...", "sinks", "schemas/...", "configs"}},
	// The command and its helpers wire everything.
	{"cmd/...", []string{"..."}},
}

func rule(pkg string) []string {
	best, bestLen := []string(nil), -1
	for _, a := range allowed {
		if matches(a.pkg, pkg) && len(a.pkg) > bestLen {
			best, bestLen = a.imports, len(a.pkg)
		}
	}
	if bestLen < 0 {
		return []string{"<no rule>"}
	}
	return best
}

func matches(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pattern == pkg
}

func TestImportsRunOneWay(t *testing.T) {
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the module root")
	var pkgs []string
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() {
			if m, _ := filepath.Glob(filepath.Join(p, "*.go")); len(m) > 0 {
				rel, err := filepath.Rel(root, p)
				if err != nil {
					return err
				}
				pkgs = append(pkgs, filepath.ToSlash(rel))
			}
		}
		return nil
	}))
	require.Greater(t, len(pkgs), 15, "packages found")
	var problems []string
	ctx := build.Default
	ctx.BuildTags = append(ctx.BuildTags, "failpoints")
	for _, pkg := range pkgs {
		bp, err := ctx.ImportDir(filepath.Join(root, pkg), build.ImportComment)
		require.NoError(t, err, pkg)
		may := rule(pkg)
		imports := append(append(append([]string{}, bp.Imports...), bp.TestImports...), bp.XTestImports...)
		for _, imp := range imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok || dep == pkg || strings.HasPrefix(dep, pkg+"/") && strings.Contains(dep, "/internal/") {
				continue
			}
			okDep := false
			for _, m := range may {
				okDep = okDep || matches(m, dep)
			}
			if !okDep {
				problems = append(problems, pkg+" imports "+dep)
			}
		}
	}
	sort.Strings(problems)
	require.Empty(t, problems, "imports that run up the layers (see ARCHITECTURE.md)")
}

// TestTheRuleCanFail: an import up the layers is reported.
func TestTheRuleCanFail(t *testing.T) {
	for _, c := range []struct {
		pkg, dep string
		ok       bool
	}{
		{"schemas", "pipeline", false},
		{"sinks/duckdb", "transform", false},
		{"pipeline", "sinks/duckdb", false},
		{"transform", "sinks", false},
		{"configs", "schemas", false},
		{"pipeline", "sinks", true},
		{"sinks/duckdb", "schemas/mempool", true},
		{"cmd/fhirferry", "sinks/duckdb", true},
	} {
		okDep := false
		for _, m := range rule(c.pkg) {
			okDep = okDep || matches(m, c.dep)
		}
		require.Equal(t, c.ok, okDep, "%s importing %s", c.pkg, c.dep)
	}
}
