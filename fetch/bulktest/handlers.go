package bulktest

import (
	"encoding/json"
	"maps"
	"net/http"
	"strconv"
	"strings"
)

const maxRequestLog = 100000

// origin is scheme://host[:port] of the main FHIR server.
func (s *Server) origin(r *http.Request) string {
	if b := s.BaseURL(); b != "" {
		return strings.TrimSuffix(b, fhirPath)
	}
	return "http://" + r.Host
}

// base is the FHIR base URL.
func (s *Server) base(r *http.Request) string { return s.origin(r) + fhirPath }

func (s *Server) record(rec *RequestRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stats.Requests) < maxRequestLog {
		s.stats.Requests = append(s.stats.Requests, *rec)
	}
	s.log.Debug("bulktest request", "kind", rec.Kind, "method", rec.Method, "path", rec.Path,
		"origin", rec.Origin, "status", rec.Status, "fault", rec.Fault)
}

// faultLocked counts an injected fault and tags the request with it.
func (s *Server) faultLocked(rec *RequestRecord, name string) {
	s.stats.Faults[name]++
	if rec.Fault == "" {
		rec.Fault = name
	} else {
		rec.Fault += "," + name
	}
}

// authorize runs the Authorizer; it answers 401 and returns false on
// failure. With no Authorizer but FilesRequireToken set (files only), any
// Authorization header passes.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rec *RequestRecord) bool {
	var err error
	if s.opts.Auth != nil {
		err = s.opts.Auth.Authorize(r)
	} else if r.Header.Get("Authorization") == "" {
		err = errMissingToken
	}
	if err == nil {
		return true
	}
	s.mu.Lock()
	s.stats.AuthFailures++
	s.mu.Unlock()
	rec.Status = http.StatusUnauthorized
	w.Header().Set("WWW-Authenticate", `Bearer realm="bulktest"`)
	writeOO(w, rec.Status, "error", "login", "unauthorized: "+err.Error())
	return false
}

type authError string

func (e authError) Error() string { return string(e) }

const errMissingToken = authError("no Authorization header")

func (s *Server) serveMain(w http.ResponseWriter, r *http.Request) {
	s.route(w, r, "main")
}

func (s *Server) serveFilesOrigin(w http.ResponseWriter, r *http.Request) {
	s.route(w, r, "files")
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, origin string) {
	rec := &RequestRecord{Kind: KindOther, Method: r.Method, Path: r.URL.Path, Origin: origin,
		HadAuth: r.Header.Get("Authorization") != ""}
	defer s.record(rec)
	rest, ok := strings.CutPrefix(r.URL.Path, fhirPath+"/")
	if !ok {
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "not found: "+r.URL.Path)
		return
	}
	parts := strings.Split(rest, "/")
	if origin == "main" && s.routeMain(w, r, rec, rest, parts) {
		return
	}
	switch {
	case len(parts) == 4 && parts[0] == "bulkfiles" && r.Method == http.MethodGet:
		rec.Kind = KindFile
		s.handleFile(w, r, rec, parts[1], parts[2], parts[3], origin)
	case len(parts) == 2 && parts[0] == "attachments" && r.Method == http.MethodGet:
		rec.Kind = KindAttachment
		s.handleAttachment(w, r, rec, parts[1], origin)
	default:
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-supported", "no route for "+r.Method+" "+r.URL.Path)
	}
}

// routeMain serves the routes only the FHIR server's own origin has:
// metadata, kick-off, Group read and the status URLs. It reports whether
// it served the request.
func (s *Server) routeMain(w http.ResponseWriter, r *http.Request, rec *RequestRecord, rest string, parts []string) bool {
	get := r.Method == http.MethodGet
	switch {
	case rest == "metadata" && get:
		rec.Kind = KindMetadata
		rec.Status = http.StatusOK
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write([]byte(capabilityStatement))
	case (get || r.Method == http.MethodPost) && isExportPath(rest, parts):
		rec.Kind = KindKickOff
		if s.opts.Auth != nil && !s.authorize(w, r, rec) {
			return true
		}
		sc := scope{level: levelSystem}
		switch parts[0] {
		case "Patient":
			sc.level = levelPatient
		case "Group":
			sc = scope{level: levelGroup, group: parts[1]}
		}
		s.handleKickOff(w, r, rec, sc)
	case len(parts) == 2 && parts[0] == "Group" && get:
		rec.Kind = KindGroupRead
		if s.opts.Auth != nil && !s.authorize(w, r, rec) {
			return true
		}
		s.handleGroupRead(w, r, rec, parts[1])
	case rest == "Patient" && get:
		rec.Kind = KindSearch
		if s.opts.Auth != nil && !s.authorize(w, r, rec) {
			return true
		}
		s.handleMemberSearch(w, r, rec)
	case len(parts) == 2 && parts[0] == "bulkstatus" && (get || r.Method == http.MethodDelete):
		rec.Kind = KindStatus
		if r.Method == http.MethodDelete {
			rec.Kind = KindDelete
		}
		if s.opts.Auth != nil && !s.authorize(w, r, rec) {
			return true
		}
		s.handleStatus(w, r, rec, parts[1])
	default:
		return false
	}
	return true
}

// isExportPath reports whether a path (below the FHIR base) is a kick-off.
func isExportPath(rest string, parts []string) bool {
	return rest == "$export" || rest == "Patient/$export" ||
		len(parts) == 3 && parts[0] == "Group" && parts[2] == "$export"
}

func (s *Server) handleGroupRead(w http.ResponseWriter, r *http.Request, rec *RequestRecord, id string) {
	i, ok := groupIndex(id)
	if !ok {
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "Group/"+id+" is unknown")
		return
	}
	elements := r.URL.Query().Get("_elements")
	s.mu.Lock()
	f := s.faults
	if f.GroupReadUnsupported {
		s.faultLocked(rec, "GroupReadUnsupported")
	}
	if f.GroupElementsUnsupported && elements != "" {
		s.faultLocked(rec, "GroupElementsUnsupported")
	}
	if f.GroupReadMemberLimit > 0 {
		s.faultLocked(rec, "GroupReadMemberLimit")
	}
	s.mu.Unlock()
	switch {
	case f.GroupReadUnsupported:
		rec.Status = http.StatusBadRequest
		writeOO(w, rec.Status, "error", "not-supported", "Group read is not supported")
		return
	case f.GroupElementsUnsupported && elements != "":
		rec.Status = http.StatusBadRequest
		writeOO(w, rec.Status, "error", "not-supported", "_elements is not supported on read")
		return
	}
	body := s.gen.renderGroup(nil, s.st.Load(), i)
	if elements != "" || f.GroupReadMemberLimit > 0 {
		var err error
		if body, err = shapeGroup(body, elements, f.GroupReadMemberLimit); err != nil {
			rec.Status = http.StatusBadRequest
			writeOO(w, rec.Status, "error", "invalid", err.Error())
			return
		}
	}
	rec.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/fhir+json")
	_, _ = w.Write(body)
}

// shapeGroup applies _elements (keeping the mandatory id and meta, and
// tagging SUBSETTED) and a member limit to a rendered Group.
func shapeGroup(body []byte, elements string, limit int) ([]byte, error) {
	var g map[string]any
	if err := json.Unmarshal(body, &g); err != nil {
		return nil, err
	}
	if m, ok := g["member"].([]any); ok && limit > 0 && len(m) > limit {
		g["member"] = m[:limit]
	}
	if elements != "" {
		keep := map[string]bool{"resourceType": true, "id": true, "meta": true}
		for _, e := range strings.Split(elements, ",") {
			keep[strings.TrimSpace(e)] = true
		}
		for k := range g {
			if !keep[k] {
				delete(g, k)
			}
		}
		meta, _ := g["meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["tag"] = []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}}
		g["meta"] = meta
	}
	return json.Marshal(g)
}

// memberSearchPage is the page size of a member search without _count.
const memberSearchPage = 50

// handleMemberSearch serves `Patient?_has:Group:member:_id=ID[&_count=N]
// [&_elements=id]`, paged with _offset: the Patients of a Group as a
// searchset of id-only Patients. Other Patient searches are refused.
func (s *Server) handleMemberSearch(w http.ResponseWriter, r *http.Request, rec *RequestRecord) {
	q := r.URL.Query()
	id := q.Get("_has:Group:member:_id")
	if _, ok := groupIndex(id); !ok {
		rec.Status = http.StatusBadRequest
		writeOO(w, rec.Status, "error", "not-supported", "only Patient?_has:Group:member:_id=<known Group> is supported")
		return
	}
	count, offset := memberSearchPage, 0
	if v, err := strconv.Atoi(q.Get("_count")); err == nil && v > 0 {
		count = min(v, 1000)
	}
	if v, err := strconv.Atoi(q.Get("_offset")); err == nil && v > 0 {
		offset = v
	}
	members := s.Members(id)
	page := members[min(offset, len(members)):min(offset+count, len(members))]
	type entry struct {
		FullURL  string            `json:"fullUrl"`
		Resource map[string]string `json:"resource"`
	}
	type link struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	}
	base := s.BaseURL()
	if base == "" {
		base = s.base(r)
	}
	b := struct {
		ResourceType string  `json:"resourceType"`
		Type         string  `json:"type"`
		Total        int     `json:"total"`
		Link         []link  `json:"link"`
		Entry        []entry `json:"entry"`
	}{ResourceType: "Bundle", Type: "searchset", Total: len(members)}
	self := base + "/Patient?" + q.Encode()
	b.Link = append(b.Link, link{"self", self})
	if offset+count < len(members) {
		nq := maps.Clone(q)
		nq.Set("_count", strconv.Itoa(count))
		nq.Set("_offset", strconv.Itoa(offset+count))
		b.Link = append(b.Link, link{"next", base + "/Patient?" + nq.Encode()})
	}
	for _, p := range page {
		b.Entry = append(b.Entry, entry{FullURL: base + "/Patient/" + p, Resource: map[string]string{"resourceType": "Patient", "id": p}})
	}
	out, err := json.Marshal(b)
	if err != nil {
		rec.Status = http.StatusInternalServerError
		writeOO(w, rec.Status, "error", "exception", err.Error())
		return
	}
	rec.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/fhir+json")
	_, _ = w.Write(out)
}

const capabilityStatement = `{"resourceType":"CapabilityStatement","status":"active","date":"2025-01-01","kind":"instance",` +
	`"instantiates":["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],` +
	`"software":{"name":"fhirferry bulktest"},"fhirVersion":"4.0.1","format":["application/fhir+json"],` +
	`"rest":[{"mode":"server","security":{"service":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/restful-security-service","code":"SMART-on-FHIR"}]}]},` +
	`"resource":[{"type":"Group","interaction":[{"code":"read"}],"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]},` +
	`{"type":"Patient","interaction":[{"code":"search-type"}],"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}]}],` +
	`"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]}`
