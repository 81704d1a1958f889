// Package bulktest is a conformant, fault-injecting FHIR Bulk Data
// ($export) server that serves deterministic, Synthea-like generated data.
//
// It backs fhirferry's client tests, the demo command, crash tests and
// benchmarks, so it behaves like the SMART reference server
// (smart-on-fhir/bulk-data-server) where that server is strict, and
// implements the STU2 semantics (plus the STU3 parts fhirferry uses) where it
// is not. See /work/shared/docs/BULK_DATA_CLIENT_SPEC.md §7.2 and §7.3.
//
// # Data
//
// Every resource is a pure function of (Options.Seed, patient index,
// resource type, ordinal, version) and is rendered on the fly while a file
// streams, so serving a multi-gigabyte export needs no more memory than a
// small one. Only mutations made with [Server.Advance] (new patients, new
// versions, tombstones, Group membership changes) are kept in memory, as an
// immutable overlay; each kick-off takes a snapshot of it, so a later
// Advance never changes an export in flight.
//
// The server clock starts at Options.Start and moves only through Advance.
// Initial resources have meta.lastUpdated spread over the year before
// Start; mutations carry the clock time after the Advance. transactionTime is
// the clock at kick-off, and `_since` returns resources with
// since < meta.lastUpdated <= transactionTime, plus `deleted` Bundles for
// resources deleted in that window.
//
// Two Groups exist: "all" (every patient) and "cohort" (about 70% of the
// initial patients, every patient created by Advance, and patients added by
// Mutation.AddGroupMembers). Group-level `_since` exports do NOT back-fill
// the history of patients who joined the Group after `_since` (the spec lets
// servers choose; clients must use the membership request pattern).
// Patient- and Group-level exports also return the referenced Practitioner,
// Organization and Location resources; system-level exports add the Group
// resources.
//
// # Faults
//
// [Faults] lists every injectable failure. Counters ("next N ...") are
// consumed one per matching request, in arrival order, so a test can reason
// about exactly which request fails. Every fault is visible in [Stats].
//
// # Auth
//
// bulktest has no token logic of its own: an [Authorizer] (the SMART
// Backend Services implementation lives in fetch/auth) mounts its endpoints
// and vets every protected request.
package bulktest
