package transform

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform/view"
)

// LoadViews compiles the views a pipeline evaluates: the embedded default
// pack (when defaults is true) plus the ViewDefinitions in dir, a user view
// replacing the default of the same name. Every problem is reported.
func LoadViews(defaults bool, dir string) ([]View, error) {
	files, err := schemas.ResolveViews(defaults, dir)
	if err != nil {
		return nil, err
	}
	var out []View
	var errs []error
	for _, f := range files {
		v, err := view.Compile(f.JSON, view.WarehouseTypes())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Source, err))
			continue
		}
		var meta struct {
			Description string `json:"description"`
		}
		_ = json.Unmarshal(f.JSON, &meta) // compiled above, so it is JSON
		out = append(out, View{Name: v.Name, Resource: v.Resource, Description: meta.Description, Runner: v})
	}
	return out, errors.Join(errs...)
}
