# Builds with the version stamped in (fhirferry --version); `go build` and
# `go run` work without make, reporting the VCS revision instead.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build image test
build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/fhirferry ./cmd/fhirferry

image:
	docker build -f deploy/container/Dockerfile --build-arg VERSION=$(VERSION) -t fhirferry:$(VERSION) .

test:
	go test ./...
