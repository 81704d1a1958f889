package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// viewFS holds the default view pack: the tables an analyst wants on day
// one, compiled into the binary so a fresh install needs no files.
//
//go:embed views/*.json
var viewFS embed.FS

// ViewFile is one ViewDefinition as JSON, named by the table it fills.
type ViewFile struct {
	// Name is the view's `name`, which is also its table name.
	Name string
	// JSON is the ViewDefinition exactly as read.
	JSON []byte
	// Source says where the view came from, for messages: "default:patient.json"
	// for the embedded pack, the file path for a user's view.
	Source string
}

// sqlName is the SQL-on-FHIR sql-name rule a view name must follow to be a
// table name.
var sqlName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// reservedNames are the system tables a view may not replace.
var reservedNames = map[string]bool{
	RawTable: true, DeletedTable: true, RejectsTable: true,
	OutcomesTable: true, RunsTable: true, CheckTable: true,
	ViewDefsTable: true, GroupMemberTable: true, CurrentMemberView: true,
	ValueSetCodesTable: true,
}

// DefaultViews returns the embedded view pack, sorted by name. The files are
// checked by tests, so reading them cannot fail at run time.
func DefaultViews() []ViewFile {
	ents, err := fs.ReadDir(viewFS, "views")
	if err != nil {
		panic(fmt.Sprintf("schemas: embedded views: %v", err)) // impossible: go:embed checked it
	}
	out := make([]ViewFile, 0, len(ents))
	for _, e := range ents {
		b, err := viewFS.ReadFile(path.Join("views", e.Name()))
		if err != nil {
			panic(fmt.Sprintf("schemas: embedded views: %v", err))
		}
		vf, err := ParseViewFile("default:"+e.Name(), b)
		if err != nil {
			panic(err.Error()) // caught by TestDefaultViewsWellFormed
		}
		out = append(out, vf)
	}
	sortViews(out)
	return out
}

// LoadViewDir reads every *.json file in dir (not its subfolders) as a
// ViewDefinition, sorted by name. Errors name the file and, for bad JSON,
// the line and column; two files defining the same view name is an error.
func LoadViewDir(dir string) ([]ViewFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("views dir: %w", err)
	}
	var (
		out  []ViewFile
		errs []error
		seen = map[string]string{}
	)
	for _, e := range ents {
		if e.IsDir() || !strings.EqualFold(filepath.Ext(e.Name()), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		vf, err := ParseViewFile(p, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, ok := seen[vf.Name]; ok {
			errs = append(errs, fmt.Errorf("%s: view name %q is already defined by %s", p, vf.Name, prev))
			continue
		}
		seen[vf.Name] = p
		out = append(out, vf)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sortViews(out)
	return out, nil
}

// ResolveViews returns the views a pipeline evaluates: the default pack when
// defaults is true, plus the views in dir when dir is not empty. A user view
// named like a default view replaces it, so a user can adjust one default
// table without turning the whole pack off.
func ResolveViews(defaults bool, dir string) ([]ViewFile, error) {
	byName := map[string]ViewFile{}
	if defaults {
		for _, v := range DefaultViews() {
			byName[v.Name] = v
		}
	}
	if dir != "" {
		user, err := LoadViewDir(dir)
		if err != nil {
			return nil, err
		}
		for _, v := range user {
			byName[v.Name] = v
		}
	}
	out := make([]ViewFile, 0, len(byName))
	for _, v := range byName {
		out = append(out, v)
	}
	sortViews(out)
	return out, nil
}

// ParseViewFile checks what a view needs to become a table (a JSON object
// with a valid table name that is not a system table) and wraps it; src
// names the file in errors. Everything else is the view compiler's business.
func ParseViewFile(src string, b []byte) (ViewFile, error) {
	var head struct {
		Name         *string `json:"name"`
		ResourceType string  `json:"resourceType"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return ViewFile{}, fmt.Errorf("%s: %s", src, describeJSONError(b, err))
	}
	switch {
	case head.ResourceType != "" && head.ResourceType != "ViewDefinition" && !strings.HasSuffix(head.ResourceType, "/ViewDefinition"):
		return ViewFile{}, fmt.Errorf("%s: resourceType is %q, want ViewDefinition", src, head.ResourceType)
	case head.Name == nil || *head.Name == "":
		return ViewFile{}, fmt.Errorf("%s: name: missing; a view needs a name, which becomes its table name", src)
	case !sqlName.MatchString(*head.Name):
		return ViewFile{}, fmt.Errorf("%s: name: %q is not a valid table name (letters, digits and _, starting with a letter)", src, *head.Name)
	case reservedNames[strings.ToLower(*head.Name)]:
		return ViewFile{}, fmt.Errorf("%s: name: %q is a fhirferry system table", src, *head.Name)
	}
	return ViewFile{Name: *head.Name, JSON: b, Source: src}, nil
}

// describeJSONError turns a decoding error into "line L, column C: reason".
func describeJSONError(b []byte, err error) string {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
		if te.Field != "" {
			return fmt.Sprintf("%s: %s is %s, want %s", lineCol(b, off), te.Field, te.Value, te.Type)
		}
		if te.Type.Kind().String() == "struct" {
			return fmt.Sprintf("%s: a ViewDefinition must be a JSON object, not %s", lineCol(b, off), te.Value)
		}
	}
	if off < 0 {
		return err.Error()
	}
	return fmt.Sprintf("%s: %v", lineCol(b, off), err)
}

func lineCol(b []byte, off int64) string {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	pre := b[:off]
	line := bytes.Count(pre, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(pre, '\n') + 1)
	if col < 1 {
		col = 1
	}
	return fmt.Sprintf("line %d, column %d", line, col)
}

func sortViews(v []ViewFile) { sort.Slice(v, func(i, j int) bool { return v[i].Name < v[j].Name }) }
