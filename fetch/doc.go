// Package fetch is fhirferry's FHIR Bulk Data ($export) client: kick-off,
// status polling, manifest parsing (STU1 to STU3, paged), cancel, and
// downloads of output, deleted and error files into an on-disk spool.
//
// A Client is safe for concurrent use. Every blocking call takes a context;
// waits are timers in a select, never sleeps. Retries follow the client
// digest (BULK_DATA_CLIENT_SPEC.md): Retry-After as delta-seconds or
// HTTP-date, clamped to [Options.MinWait, Options.MaxWait]; exponential
// backoff with ±20% jitter otherwise; 401 renews the token once.
//
// Token rules (C33-C35): kick-off, status and DELETE carry the bearer token
// whenever Options.Auth is set. File and attachment GETs carry it only when
// the manifest says requiresAccessToken=true, and only to URLs taken from
// that manifest or its attachments; a redirect that changes origin drops it.
//
// Spool files are gzip-compressed NDJSON written atomically (temp + rename):
// a spooled file is either complete or absent.
package fetch
