// A module of its own, so that the FHIR protos it reads the R4 definitions
// from stay out of fhirferry's go.mod.
module github.com/fhirferry/fhirferry/transform/fhirpath/internal/r4gen

go 1.26

require (
	github.com/google/fhir/go v0.7.4
	google.golang.org/protobuf v1.25.0
)

require github.com/golang/protobuf v1.4.3 // indirect
