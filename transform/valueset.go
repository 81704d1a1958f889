package transform

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fhirferry/fhirferry/schemas"
)

// ValueSet is one value set's expansion, as the measures use it.
type ValueSet struct {
	URL, OID, Name, Version string
	// File is where it was read, for errors and the load's report.
	File  string
	Codes []Code
}

// Code is one code of an expansion.
type Code struct {
	System, SystemVersion, Code, Display string
}

// ValueSetLoad is what ReadValueSets found.
type ValueSetLoad struct {
	Sets []ValueSet
	// Unexpanded names the value sets without expansion.contains: a
	// compose alone needs a terminology server to expand, which fhirferry
	// is not, so they are left out (a measure using one then reports it
	// missing).
	Unexpanded []string
	// Files is how many files were read.
	Files int
}

// vsJSON is the part of a ValueSet, a Bundle of them, or a Parameters
// ($expand's answer wraps none, but VSAC's package bundles do) that the
// load reads.
type vsJSON struct {
	ResourceType string `json:"resourceType"`
	URL          string `json:"url"`
	Name         string `json:"name"`
	Title        string `json:"title"`
	Version      string `json:"version"`
	Identifier   []struct {
		System string `json:"system"`
		Value  string `json:"value"`
	} `json:"identifier"`
	Expansion *struct {
		Contains []containsJSON `json:"contains"`
	} `json:"expansion"`
	Entry []struct {
		Resource *vsJSON `json:"resource"`
	} `json:"entry"`
}

type containsJSON struct {
	System   string         `json:"system"`
	Version  string         `json:"version"`
	Code     string         `json:"code"`
	Display  string         `json:"display"`
	Abstract bool           `json:"abstract"`
	Contains []containsJSON `json:"contains"`
}

// ReadValueSets reads the ValueSet resources at path: a JSON file holding
// a ValueSet or a Bundle of them, an NDJSON file of them, or a folder of
// such files (recursively; .json and .ndjson, gzipped or not). Value sets
// are keyed by url: the same url twice with different codes is an error
// naming both files, since a measure would count by either.
func ReadValueSets(path string) (ValueSetLoad, error) {
	var load ValueSetLoad
	files, err := valueSetFiles(path)
	if err != nil {
		return load, err
	}
	seen := map[string]int{}
	for _, f := range files {
		sets, unexpanded, err := readValueSetFile(f)
		if err != nil {
			return load, err
		}
		load.Files++
		load.Unexpanded = append(load.Unexpanded, unexpanded...)
		for _, vs := range sets {
			if i, ok := seen[vs.URL]; ok {
				if !slices.Equal(load.Sets[i].Codes, vs.Codes) {
					return load, fmt.Errorf("value set %s (%s) is in %s and, with other codes, in %s",
						vs.URL, vs.Name, load.Sets[i].File, vs.File)
				}
				continue
			}
			seen[vs.URL] = len(load.Sets)
			load.Sets = append(load.Sets, vs)
		}
	}
	if len(load.Sets) == 0 && len(load.Unexpanded) == 0 {
		return load, fmt.Errorf("%s: no ValueSet resources found", path)
	}
	return load, nil
}

func valueSetFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := strings.TrimSuffix(d.Name(), ".gz")
		if !d.IsDir() && (strings.HasSuffix(n, ".json") || strings.HasSuffix(n, ".ndjson")) {
			files = append(files, p)
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("%s: no .json or .ndjson files", path)
	}
	return files, err
}

func readValueSetFile(file string) (sets []ValueSet, unexpanded []string, err error) {
	r, err := Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	dec := json.NewDecoder(r)
	for n := 1; ; n++ {
		var doc vsJSON
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return sets, unexpanded, nil
		} else if err != nil {
			return nil, nil, fmt.Errorf("%s: resource %d: %w", file, n, err)
		}
		if err := collectValueSets(file, &doc, &sets, &unexpanded); err != nil {
			return nil, nil, err
		}
	}
}

// collectValueSets adds doc's value sets: doc itself, or a Bundle's
// entries. Other resources in a Bundle (a measure package's Library and
// Measure) are skipped.
func collectValueSets(file string, doc *vsJSON, sets *[]ValueSet, unexpanded *[]string) error {
	switch doc.ResourceType {
	case "Bundle":
		for _, e := range doc.Entry {
			if e.Resource != nil && e.Resource.ResourceType == "ValueSet" {
				if err := collectValueSets(file, e.Resource, sets, unexpanded); err != nil {
					return err
				}
			}
		}
		return nil
	case "ValueSet":
	default:
		return fmt.Errorf("%s: a %q is neither a ValueSet nor a Bundle", file, doc.ResourceType)
	}
	vs := ValueSet{URL: doc.URL, Name: cmpOr(doc.Name, doc.Title), Version: doc.Version, File: file, OID: oidOf(doc)}
	if vs.URL == "" {
		return fmt.Errorf("%s: ValueSet %q has no url", file, vs.Name)
	}
	if doc.Expansion == nil || len(doc.Expansion.Contains) == 0 {
		*unexpanded = append(*unexpanded, fmt.Sprintf("%s (%s)", vs.Name, vs.URL))
		return nil
	}
	var walk func([]containsJSON) error
	walk = func(cs []containsJSON) error {
		for _, c := range cs {
			if c.Code != "" && !c.Abstract {
				if c.System == "" {
					return fmt.Errorf("%s: ValueSet %s: code %q has no system", file, vs.URL, c.Code)
				}
				vs.Codes = append(vs.Codes, Code{System: c.System, SystemVersion: c.Version, Code: c.Code, Display: c.Display})
			}
			if err := walk(c.Contains); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(doc.Expansion.Contains); err != nil {
		return err
	}
	*sets = append(*sets, vs)
	return nil
}

// oidOf is the value set's OID: from an urn:oid identifier, or the last
// segment of a VSAC url (http://cts.nlm.nih.gov/fhir/ValueSet/<oid>).
func oidOf(doc *vsJSON) string {
	for _, id := range doc.Identifier {
		if v, ok := strings.CutPrefix(id.Value, "urn:oid:"); ok {
			return v
		}
	}
	last := doc.URL[strings.LastIndexByte(doc.URL, '/')+1:]
	if last != "" && strings.Trim(last, "0123456789.") == "" && strings.Contains(last, ".") {
		return last
	}
	return ""
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ValueSetBatches emits the value sets as batches of the
// schemas.ValueSetCodes table, at most rows rows each.
func ValueSetBatches(sets []ValueSet, rows int, emit func(schemas.Batch) error) error {
	t := schemas.ValueSetCodes
	b := array.NewRecordBuilder(memory.DefaultAllocator, t.Schema)
	defer b.Release()
	flush := func() error {
		return emit(schemas.Batch{Table: t, Rec: b.NewRecordBatch()})
	}
	n := 0
	for _, vs := range sets {
		for _, c := range vs.Codes {
			for i, v := range [...]string{vs.URL, vs.OID, vs.Name, vs.Version, c.System, c.SystemVersion, c.Code, c.Display} {
				sb := b.Field(i).(*array.StringBuilder)
				if v == "" && t.Schema.Field(i).Nullable {
					sb.AppendNull()
				} else {
					sb.Append(v)
				}
			}
			if n++; n == rows {
				if err := flush(); err != nil {
					return err
				}
				n = 0
			}
		}
	}
	return flush()
}
