package bulktest

import (
	"net/http"
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
		s.handleGroupRead(w, rec, parts[1])
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

func (s *Server) handleGroupRead(w http.ResponseWriter, rec *RequestRecord, id string) {
	i, ok := groupIndex(id)
	if !ok {
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "Group/"+id+" is unknown")
		return
	}
	s.mu.Lock()
	refuse := s.faults.GroupReadUnsupported
	if refuse {
		s.faultLocked(rec, "GroupReadUnsupported")
	}
	s.mu.Unlock()
	if refuse {
		rec.Status = http.StatusBadRequest
		writeOO(w, rec.Status, "error", "not-supported", "Group read is not supported")
		return
	}
	rec.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/fhir+json")
	_, _ = w.Write(s.gen.renderGroup(nil, s.st.Load(), i))
}

const capabilityStatement = `{"resourceType":"CapabilityStatement","status":"active","date":"2025-01-01","kind":"instance",` +
	`"instantiates":["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],` +
	`"software":{"name":"fhirferry bulktest"},"fhirVersion":"4.0.1","format":["application/fhir+json"],` +
	`"rest":[{"mode":"server","security":{"service":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/restful-security-service","code":"SMART-on-FHIR"}]}]},` +
	`"resource":[{"type":"Group","interaction":[{"code":"read"}],"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]},` +
	`{"type":"Patient","operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}]}],` +
	`"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]}`
