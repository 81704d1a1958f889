package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform"
)

// ValueSetReport is what LoadValueSets did.
type ValueSetReport struct {
	Path  string
	Files int
	// Sets and Codes are the value sets and codes stored in every sink.
	Sets, Codes int
	// Unexpanded are the value sets left out for want of an expansion.
	Unexpanded []string
	// Sinks are the sinks written, in config order.
	Sinks []string
}

// valueSetBatchRows bounds a value-set batch: the largest eCQM value sets
// hold some ten thousand codes, so a load is a few batches.
const valueSetBatchRows = 16 << 10

// LoadValueSets replaces every sink's valueset_code table with the value
// sets read from path (a file or a folder), each sink in one transaction.
// The table then holds exactly those value sets: loading is declarative,
// like a config, so a value set removed from the folder leaves the table.
func (a *App) LoadValueSets(ctx context.Context, path string) (*ValueSetReport, error) {
	load, err := transform.ReadValueSets(path)
	if err != nil {
		return nil, fmt.Errorf("value sets: %w", err)
	}
	rep := &ValueSetReport{Path: path, Files: load.Files, Sets: len(load.Sets), Unexpanded: load.Unexpanded}
	for _, vs := range load.Sets {
		rep.Codes += len(vs.Codes)
	}
	rbs, err := a.Rebuilders(nil)
	if err != nil {
		return nil, err
	}
	if len(rbs) == 0 {
		return nil, errors.New("value sets: no configured sink can store tables")
	}
	defer a.Flush(ctx)
	var errs []error
	for _, rb := range rbs {
		err := rb.ReplaceTable(ctx, schemas.ValueSetCodes, func(emit func(schemas.Batch) error) error {
			return transform.ValueSetBatches(load.Sets, valueSetBatchRows, emit)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", rb.Name, err))
			continue
		}
		rep.Sinks = append(rep.Sinks, rb.Name)
	}
	return rep, errors.Join(errs...)
}
