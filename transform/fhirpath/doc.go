// Package fhirpath evaluates the FHIRPath subset that SQL-on-FHIR v2 views
// need, directly over resources parsed with fastjson.
//
// An expression is parsed once by a hand-written Pratt parser and compiled
// to a tree of closures. Evaluation appends results to caller-owned slices
// and takes scratch buffers from a per-worker [Ctx], so evaluating a view
// over millions of resources does not allocate per item in steady state.
//
// Without a FHIR model the evaluator resolves choice elements from the JSON
// keys (value → valueQuantity, recording "Quantity" as the item's type) and
// classifies untyped primitives by their JSON kind. Numbers keep their
// lexical form, so decimals compare and print exactly (1.0 ≠ "1"); integer
// arithmetic stays integral and "/" yields a decimal. Dates, dateTimes and
// times compare with FHIRPath precision rules: values of different
// precision that agree so far give an empty result.
//
// getResourceKey() returns the resource id and getReferenceKey([Type])
// the id part of Reference.reference (Type/id, absolute URLs and
// _history suffixes; urn:uuid:x yields x), so the two join.
package fhirpath
