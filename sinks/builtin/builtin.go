// Package builtin lists the sink types built into the fhirferry binary, by
// their config type. It is the one place that imports every sink package;
// the binary hands the map to pipeline.Build, so the pipeline itself never
// imports a concrete sink.
package builtin

import (
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/sinks/parquet"
	"github.com/fhirferry/fhirferry/sinks/postgres"
)

// Factories returns a new map of every built-in sink type.
func Factories() map[string]sinks.Factory {
	return map[string]sinks.Factory{
		configs.SinkDuckDB:   duckdb.Open,
		configs.SinkPostgres: postgres.Open,
		configs.SinkParquet:  parquet.Open,
	}
}
