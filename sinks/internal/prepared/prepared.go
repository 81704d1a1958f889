// Package prepared keeps the tables a sink has prepared (Sink.Prepare,
// ReplaceTable), which its runs write and apply. The zero Tables is empty
// and ready; it is safe for concurrent use.
package prepared

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/fhirferry/fhirferry/schemas"
)

// Tables is a sink's prepared tables by name.
type Tables struct {
	mu sync.Mutex
	m  map[string]*schemas.Table
}

// Put records tables, replacing those of the same name.
func (ts *Tables) Put(tables ...*schemas.Table) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.m == nil {
		ts.m = map[string]*schemas.Table{}
	}
	for _, t := range tables {
		ts.m[t.Name] = t
	}
}

// Get returns the table prepared under name, or nil.
func (ts *Tables) Get(name string) *schemas.Table {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.m[name]
}

// All returns every prepared table, by name.
func (ts *Tables) All() []*schemas.Table {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := slices.Collect(maps.Values(ts.m))
	slices.SortFunc(out, func(a, b *schemas.Table) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Views returns the prepared view tables, by name.
func (ts *Tables) Views() []*schemas.Table {
	var out []*schemas.Table
	for _, t := range ts.All() {
		if t.Kind == schemas.KindView {
			out = append(out, t)
		}
	}
	return out
}
