package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/auth"
)

// HTTPClient builds a source's HTTP client: TLS 1.2 or later (C01), with
// the extra CA bundle h.CAFile when set.
func HTTPClient(h configs.HTTP) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if h.CAFile != "" {
		pem, err := os.ReadFile(h.CAFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificates found", h.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	tr.ResponseHeaderTimeout = h.RequestTimeout.D()
	return &http.Client{Transport: tr}, nil
}

// RequestFor maps a source's export settings to a kick-off request. Since
// is export.since, the _since of a first run; the runner replaces it with
// the sinks' checkpoint.
func RequestFor(src configs.Source) Request {
	e := src.Export
	return Request{
		Level: src.Level, GroupID: src.GroupID, Since: e.Since, Until: e.Until,
		Types: e.Types, Elements: e.Elements, TypeFilters: e.TypeFilters, Patients: e.Patients,
		IncludeAssociatedData: e.IncludeAssociatedData, OutputFormat: e.OutputFormat,
		AllowPartialManifests: e.AllowPartialManifests, OrganizeOutputBy: e.OrganizeOutputBy,
		Lenient: e.Lenient, Method: e.Method, Compat: e.Compat,
	}
}

// FromConfig builds the Bulk Data client of a source: its HTTP client, its
// authorization and its retry settings. obs may be nil.
func FromConfig(ctx context.Context, src configs.Source, maxLineBytes int64, log *slog.Logger, obs Observer) (*Client, error) {
	hc, err := HTTPClient(src.HTTP)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src.Name, err)
	}
	ts, err := auth.FromConfig(ctx, src.Auth, src.BaseURL, hc, log)
	if err != nil {
		return nil, fmt.Errorf("source %s: auth: %w", src.Name, err)
	}
	o := Options{
		BaseURL: src.BaseURL, HTTPClient: hc,
		Parallel: src.HTTP.Parallel, Retries: src.HTTP.Retries,
		MinWait: src.HTTP.MinWait.D(), MaxWait: src.HTTP.MaxWait.D(), RequestTimeout: src.HTTP.RequestTimeout.D(),
		ExportTimeout: src.Export.Timeout.D(), MaxLineBytes: maxLineBytes,
		UserAgent: src.HTTP.UserAgent, Logger: log, Observer: obs,
	}
	if ts != nil {
		o.Auth = ts
	}
	return New(o)
}
