package bulktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// exportReq is a validated kick-off.
type exportReq struct {
	scope
	types    []int // canonical order
	since    time.Time
	hasSince bool
	until    time.Time
	hasUntil bool
	filters  map[int][]filter // per type, ORed
	elements map[int][]string // per type (key -1: all types); nil: no _elements
	partial  bool
	lenient  bool
	request  string // the kick-off URL, for the manifest
}

// filter is one _typeFilter query: all its clauses must match.
type filter []clause

// clause is one search parameter; any of values may match.
type clause struct {
	param  string
	values []string
}

// badRequest is a kick-off validation failure, answered 400 (or 404).
type badRequest struct {
	status int
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func bad(format string, args ...any) error {
	return &badRequest{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// supportedFilters are the _typeFilter parameters honoured per type.
var supportedFilters = map[int][]string{
	tObservation:        {"category", "code", "status"},
	tCondition:          {"clinical-status", "code"},
	tMedicationRequest:  {"status", "code"},
	tProcedure:          {"status", "code"},
	tImmunization:       {"status", "vaccine-code"},
	tAllergyIntolerance: {"clinical-status", "code"},
	tEncounter:          {"status", "type"},
	tDiagnosticReport:   {"status", "code", "category"},
}

// param is one kick-off parameter value, from the query or a Parameters body.
type param struct{ name, value string }

// parseKickOff validates a kick-off and returns what to export. st is the
// snapshot the export will use; the parameters are recorded in rec.
func (s *Server) parseKickOff(r *http.Request, rec *RequestRecord, sc scope, st *state) (*exportReq, error) {
	if a := r.Header.Get("Accept"); a != "application/fhir+json" {
		return nil, bad("the Accept header must be exactly application/fhir+json, got %q", a)
	}
	async, lenient := parsePrefer(r.Header.Values("Prefer"))
	if !async {
		return nil, bad("the Prefer header must contain respond-async")
	}
	params, err := kickOffParams(r)
	if err != nil {
		return nil, err
	}
	for _, p := range params {
		rec.Params = append(rec.Params, p.name+"="+p.value)
	}
	req := &exportReq{scope: sc, lenient: lenient, request: requestURL(r, s)}
	var typeList, elemList []string
	for _, p := range params {
		switch s.paramName(p.name) {
		case "_type":
			typeList = append(typeList, splitList(p.value)...)
		case "_elements":
			elemList = append(elemList, splitList(p.value)...)
		default:
			if err := s.applyParam(req, rec, st, p); err != nil {
				return nil, err
			}
		}
	}
	if err := req.setTypes(typeList); err != nil {
		return nil, err
	}
	if err := req.setElements(elemList); err != nil {
		return nil, err
	}
	if req.patients != nil {
		slices.Sort(req.patients)
		req.patients = slices.Compact(req.patients)
	}
	return req, nil
}

// parsePrefer reads the Prefer header's respond-async and handling=lenient.
func parsePrefer(prefer []string) (async, lenient bool) {
	for _, p := range prefer {
		for _, tok := range strings.FieldsFunc(p, func(c rune) bool { return c == ',' || c == ';' }) {
			switch strings.ToLower(strings.TrimSpace(tok)) {
			case "respond-async":
				async = true
			case "handling=lenient":
				lenient = true
			}
		}
	}
	return async, lenient
}

// kickOffParams is the kick-off's parameters: the query of a GET (sorted
// by name), the Parameters body of a POST.
func kickOffParams(r *http.Request) ([]param, error) {
	switch r.Method {
	case http.MethodGet:
		var params []param
		for k, vs := range r.URL.Query() {
			for _, v := range vs {
				params = append(params, param{k, v})
			}
		}
		slices.SortStableFunc(params, func(a, b param) int { return strings.Compare(a.name, b.name) })
		for _, p := range params {
			if p.name == "patient" {
				return nil, bad("the patient parameter is only supported with POST")
			}
		}
		return params, nil
	case http.MethodPost:
		return parseParametersBody(r.Body)
	}
	return nil, &badRequest{status: http.StatusMethodNotAllowed, msg: "kick-off takes GET or POST"}
}

// paramName maps the 2018 draft's parameter names to today's when the
// server plays a 2018-draft server.
func (s *Server) paramName(name string) string {
	if s.opts.Compat2018 {
		switch name {
		case "start":
			return "_since"
		case "outputFormat":
			return "_outputFormat"
		}
	}
	return name
}

// applyParam applies one kick-off parameter (other than _type and
// _elements, which are collected first) to req.
func (s *Server) applyParam(req *exportReq, rec *RequestRecord, st *state, p param) error {
	switch name := s.paramName(p.name); name {
	case "_outputFormat":
		switch p.value {
		case "application/fhir+ndjson", "application/ndjson", "ndjson":
		default:
			return bad("_outputFormat %q is not supported; use application/fhir+ndjson", p.value)
		}
	case "_since", "_until":
		t, err := parseInstant(p.value)
		if err != nil {
			return bad("%s: %v", p.name, err)
		}
		if name == "_until" {
			req.until, req.hasUntil = t, true
			return nil
		}
		if t.After(st.now) {
			return bad("_since %s is in the future (server time %s)", p.value, appendInstant(nil, st.now))
		}
		req.since, req.hasSince = t, true
	case "_typeFilter":
		return req.addTypeFilter(p.value)
	case "patient":
		if s.rejectPatientParam(rec) {
			return bad("the patient parameter is not supported by this server")
		}
		return s.addPatient(req, st, p.value)
	case "includeAssociatedData", "_includeAssociatedData":
		// Accepted and ignored, like most servers.
	case "allowPartialManifests":
		switch p.value {
		case "true":
			req.partial = true
		case "false":
		default:
			return bad("allowPartialManifests must be true or false, got %q", p.value)
		}
	case "organizeOutputBy":
		if !req.lenient {
			return bad("organizeOutputBy is not supported (send Prefer: handling=lenient to ignore it)")
		}
	}
	return nil
}

func requestURL(r *http.Request, s *Server) string {
	return s.origin(r) + r.URL.RequestURI()
}

// parseParametersBody reads a POST kick-off body, which must be a FHIR
// Parameters resource.
func parseParametersBody(body io.Reader) ([]param, error) {
	var p struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name           string                      `json:"name"`
			ValueString    *string                     `json:"valueString"`
			ValueInstant   *string                     `json:"valueInstant"`
			ValueDateTime  *string                     `json:"valueDateTime"`
			ValueCode      *string                     `json:"valueCode"`
			ValueBoolean   *bool                       `json:"valueBoolean"`
			ValueReference *struct{ Reference string } `json:"valueReference"`
		} `json:"parameter"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 10<<20)).Decode(&p); err != nil {
		return nil, bad("the POST body must be a FHIR Parameters resource: %v", err)
	}
	if p.ResourceType != "Parameters" {
		return nil, bad("the POST body must be a FHIR Parameters resource, got resourceType %q", p.ResourceType)
	}
	var out []param
	for i, q := range p.Parameter {
		var v string
		switch {
		case q.ValueString != nil:
			v = *q.ValueString
		case q.ValueInstant != nil:
			v = *q.ValueInstant
		case q.ValueDateTime != nil:
			v = *q.ValueDateTime
		case q.ValueCode != nil:
			v = *q.ValueCode
		case q.ValueBoolean != nil:
			v = fmt.Sprint(*q.ValueBoolean)
		case q.ValueReference != nil:
			v = q.ValueReference.Reference
		default:
			return nil, bad("Parameters.parameter[%d] (%s) has no supported value[x]", i, q.Name)
		}
		out = append(out, param{q.Name, v})
	}
	return out, nil
}

// parseInstant accepts a FHIR instant (seconds required, optional
// fraction, Z or offset).
func parseInstant(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a FHIR instant (did a + arrive unencoded as a space?)", v)
	}
	return t, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (req *exportReq) allowedTypes() []int { return defaultTypes(req.level) }

func (req *exportReq) setTypes(list []string) error {
	allowed := req.allowedTypes()
	if len(list) == 0 {
		req.types = allowed
		return nil
	}
	set := map[int]bool{}
	for _, t := range list {
		i, ok := typeIndex[t]
		if !ok || !slices.Contains(allowed, i) {
			if req.lenient {
				continue
			}
			return bad("_type %q is not supported at %s level (send Prefer: handling=lenient to ignore it)", t, req.level)
		}
		set[i] = true
	}
	for _, i := range allowed {
		if set[i] {
			req.types = append(req.types, i)
		}
	}
	return nil
}

func (req *exportReq) setElements(list []string) error {
	if len(list) == 0 {
		return nil
	}
	req.elements = map[int][]string{}
	for _, e := range list {
		typ, name := -1, e
		if t, n, ok := strings.Cut(e, "."); ok {
			i, known := typeIndex[t]
			if !known || strings.Contains(n, ".") || n == "" {
				return bad("_elements %q: want Type.element or element", e)
			}
			typ, name = i, n
		}
		req.elements[typ] = append(req.elements[typ], name)
	}
	return nil
}

func (req *exportReq) addTypeFilter(v string) error {
	t, query, ok := strings.Cut(v, "?")
	typ, known := typeIndex[t]
	if !ok || !known {
		return bad("_typeFilter %q: want Type?param=value", v)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return bad("_typeFilter %q: %v", v, err)
	}
	var f filter
	for k, vs := range q {
		if !slices.Contains(supportedFilters[typ], k) {
			if req.lenient {
				return nil // the whole filter is ignored, as the reference server does
			}
			return bad("_typeFilter %q: parameter %q is not supported for %s (send Prefer: handling=lenient to ignore it)", v, k, t)
		}
		c := clause{param: k}
		for _, x := range vs {
			c.values = append(c.values, splitList(x)...)
		}
		f = append(f, c)
	}
	if req.filters == nil {
		req.filters = map[int][]filter{}
	}
	req.filters[typ] = append(req.filters[typ], f)
	return nil
}

// rejectPatientParam consumes the RejectPatientParam fault.
func (s *Server) rejectPatientParam(rec *RequestRecord) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.faults.RejectPatientParam {
		return false
	}
	s.faultLocked(rec, "RejectPatientParam")
	return true
}

func (s *Server) addPatient(req *exportReq, st *state, ref string) error {
	if req.level == levelSystem {
		return bad("the patient parameter is not supported for system-level export")
	}
	id := ref
	if i := strings.LastIndex(ref, "Patient/"); i >= 0 {
		id = ref[i+len("Patient/"):]
	}
	typ, p, ord, ok := s.gen.parseID(id)
	if !ok || typ != tPatient || ord != 0 || int(p) >= st.patients {
		return bad("patient %q is unknown", ref)
	}
	if req.level == levelGroup && !st.inGroup(s.gen, req.group, p) {
		return bad("patient %q is not a member of Group/%s", ref, req.group)
	}
	if req.patients == nil {
		req.patients = []uint32{}
	}
	req.patients = append(req.patients, p)
	return nil
}

// match reports whether a resource passes the time window and _typeFilter.
func (req *exportReq) match(g *generator, r *res, tx time.Time) bool {
	if r.lu.After(tx) {
		return false
	}
	if req.hasSince && !r.lu.After(req.since) {
		return false
	}
	if req.hasUntil && !r.lu.Before(req.until) {
		return false
	}
	fs := req.filters[r.typ]
	if len(fs) == 0 {
		return true
	}
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	for _, f := range fs {
		if f.match(g, r, &a) {
			return true
		}
	}
	return false
}

func (f filter) match(g *generator, r *res, a *attrs) bool {
	for _, c := range f {
		var field string
		var cd *code
		switch c.param {
		case "status":
			field = a.status
		case "category":
			field = a.category
		case "clinical-status":
			field = a.clinicalStatus
		case "code", "vaccine-code", "type":
			cd = a.code
			if r.typ == tObservation {
				lk := g.obsCode(r.pr, r.ord)
				cd = &code{sysLOINC, lk.loinc, lk.display}
			}
		}
		ok := false
		for _, v := range c.values {
			if cd != nil {
				sys, cv, hasSys := strings.Cut(v, "|")
				if !hasSys {
					cv, sys = v, ""
				}
				if cv == cd.code && (!hasSys || sys == "" || sys == cd.system) {
					ok = true
				}
			} else if strings.EqualFold(v, field) || (c.param == "category" && strings.EqualFold(v, "laboratory") && field == "LAB") {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
