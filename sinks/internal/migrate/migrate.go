// Package migrate holds what the sinks' migrations from schema version 1
// share: the namespace each source's rows get, and the collisions a
// version-1 warehouse may hold.
package migrate

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/fhirferry/fhirferry/sinks"
)

// NamespaceCase is the SQL expression (over a source column) of the
// namespace of each of sources; lit quotes a string literal.
func NamespaceCase(m sinks.Migration, sources []string, lit func(string) string) string {
	if len(sources) == 0 {
		return "source"
	}
	var b strings.Builder
	b.WriteString("CASE source")
	for _, src := range sources {
		fmt.Fprintf(&b, " WHEN %s THEN %s", lit(src), lit(m.NamespaceOf(src)))
	}
	b.WriteString(" ELSE source END")
	return b.String()
}

// Collisions describes, for the sources that wrote a version-1 raw
// landing, those of different namespaces: before namespaces their
// resources were keyed by (type, id) alone, so where two servers used the
// same id one resource overwrote the other.
func Collisions(m sinks.Migration, sources []string) []string {
	byNS := map[string][]string{}
	for _, src := range sources {
		ns := m.NamespaceOf(src)
		byNS[ns] = append(byNS[ns], src)
	}
	if len(byNS) < 2 {
		return nil
	}
	var parts []string
	for _, ns := range slices.Sorted(maps.Keys(byNS)) {
		parts = append(parts, fmt.Sprintf("%s (namespace %s)", strings.Join(byNS[ns], ", "), ns))
	}
	return []string{fmt.Sprintf("sources of %d different servers shared one key space before namespaces: %s; "+
		"a resource of one with the type and id of another's was overwritten and cannot be told apart now: "+
		"re-export each source to recover its resources", len(byNS), strings.Join(parts, "; "))}
}
