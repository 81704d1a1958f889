package bulktest

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fileKind is what a manifest entry lists.
type fileKind int

const (
	fileOutput fileKind = iota
	fileDeleted
	fileError
)

// fileEntry is one file of an export: a run of matching resources of one
// type (start cursor + count), a slice of deletions, or an error.
type fileEntry struct {
	kind    fileKind
	typ     int
	start   cursor
	count   int
	deleted []uint64 // fileDeleted: keys, at most bundleSize per line
	errMsg  string   // fileError
	name    string
}

const bundleSize = 50

// job is one export: a validated request plus the data snapshot it reads.
type job struct {
	id      string
	req     *exportReq
	st      *state
	tx      time.Time
	files   []fileEntry
	polls   int
	gen     int // URL generation; bumped when URLs expired
	expired int // URLs of generations <= expired answer 410
	expires time.Time
	deleted bool
	// withGroup: a Group-level export that lists its own Group
	// (Faults.ExportGroupResource).
	withGroup bool
}

// plan splits the matching resources into files. It scans the whole
// snapshot without rendering, so it is cheap compared with serving.
func (s *Server) plan(j *job) {
	g, st, req := s.gen, j.st, j.req
	maxRes := s.opts.FileMaxResources
	n := 0
	add := func(f fileEntry) {
		n++
		f.name = fmt.Sprintf("%d.%s.ndjson", n, typeName(f.typ))
		if f.kind == fileDeleted {
			f.name = fmt.Sprintf("%d.deleted.ndjson", n)
		}
		j.files = append(j.files, f)
	}
	if i, ok := groupIndex(req.group); ok && j.withGroup && !slices.Contains(req.types, tGroup) {
		r := &res{typ: tGroup, ord: i, lu: st.groupAt[i], ver: st.groupVer[i]}
		if req.match(g, r, j.tx) {
			add(fileEntry{typ: tGroup, start: cursor{0, i}, count: 1})
		}
	}
	for _, typ := range req.types {
		if typ == tGroup {
			var f fileEntry
			for i := range 2 {
				r := &res{typ: tGroup, ord: i, lu: st.groupAt[i], ver: st.groupVer[i]}
				if req.match(g, r, j.tx) {
					if f.count == 0 {
						f = fileEntry{typ: tGroup, start: cursor{0, i}}
					}
					f.count++
				}
			}
			if f.count > 0 {
				add(f)
			}
			continue
		}
		var cur fileEntry
		g.scan(st, &req.scope, typ, cursor{}, "", func(r *res, at cursor) bool {
			if !req.match(g, r, j.tx) {
				return true
			}
			if cur.count == 0 {
				cur = fileEntry{typ: typ, start: at}
			}
			cur.count++
			if cur.count == maxRes {
				add(cur)
				cur = fileEntry{}
			}
			return true
		})
		if cur.count > 0 {
			add(cur)
		}
	}
	if !req.hasSince {
		return
	}
	// Deletions in (since, tx] of the exported types and patients. They
	// are not filtered by _typeFilter: deleting an absent row is a no-op.
	var dels []uint64
	for k, e := range st.overlay {
		if !e.deleted || !e.at.After(req.since) || e.at.After(j.tx) || req.hasUntil && !e.at.Before(req.until) {
			continue
		}
		typ, p, _ := splitKey(k)
		if !slices.Contains(req.types, typ) || typ < numPatientTypes && !req.contains(g, st, p) {
			continue
		}
		dels = append(dels, k)
	}
	slices.Sort(dels)
	perFile := maxRes * bundleSize
	for len(dels) > 0 {
		k := min(perFile, len(dels))
		add(fileEntry{kind: fileDeleted, typ: tBundle, deleted: dels[:k], count: (k + bundleSize - 1) / bundleSize})
		dels = dels[k:]
	}
}

// tBundle names deleted files; it is not a generated type.
const tBundle = tGroup + 1

func typeName(t int) string {
	switch {
	case t < numTypes:
		return typeNames[t]
	case t == tBundle:
		return "Bundle"
	}
	return ""
}

// injectErrorFiles moves up to n output files (the last ones) to error[].
func (j *job) injectErrorFiles(n int) int {
	moved := 0
	for i := len(j.files) - 1; i >= 0 && moved < n; i-- {
		f := &j.files[i]
		if f.kind != fileOutput {
			continue
		}
		f.kind = fileError
		f.errMsg = fmt.Sprintf("Failed to export %s file %s", typeName(f.typ), f.name)
		f.name = strings.TrimSuffix(f.name, ".ndjson") + ".error.ndjson"
		moved++
	}
	return moved
}

func (s *Server) handleKickOff(w http.ResponseWriter, r *http.Request, rec *RequestRecord, sc scope) {
	st := s.st.Load()
	if sc.level == levelGroup {
		if _, ok := groupIndex(sc.group); !ok {
			writeOO(w, http.StatusNotFound, "error", "not-found", "Group/"+sc.group+" is unknown")
			rec.Status = http.StatusNotFound
			return
		}
	}
	s.mu.Lock()
	s.stats.KickOffs++
	switch {
	case s.faults.KickOffErrors > 0:
		s.faults.KickOffErrors--
		s.faultLocked(rec, "KickOffErrors")
		s.mu.Unlock()
		writeOO(w, http.StatusInternalServerError, "error", "exception", "File generation failed")
		rec.Status = http.StatusInternalServerError
		return
	case s.faults.KickOff429 > 0:
		s.faults.KickOff429--
		s.faultLocked(rec, "KickOff429")
		w.Header().Set("Retry-After", s.retryAfterLocked())
		s.mu.Unlock()
		writeOO(w, http.StatusTooManyRequests, "error", "throttled", "An export is already running; try again later")
		rec.Status = http.StatusTooManyRequests
		return
	}
	s.mu.Unlock()

	req, err := s.parseKickOff(r, rec, sc, st)
	if err != nil {
		status := http.StatusBadRequest
		if br := (*badRequest)(nil); errors.As(err, &br) {
			status = br.status
		}
		writeOO(w, status, "error", "invalid", err.Error())
		rec.Status = status
		return
	}
	s.mu.Lock()
	withGroup := s.faults.ExportGroupResource && req.level == levelGroup
	s.mu.Unlock()
	j := &job{req: req, st: st, tx: st.now, withGroup: withGroup}
	s.plan(j)

	s.mu.Lock()
	if s.faults.ErrorFiles > 0 {
		moved := j.injectErrorFiles(s.faults.ErrorFiles)
		s.faults.ErrorFiles -= moved
		if moved > 0 {
			s.faultLocked(rec, "ErrorFiles")
		}
	}
	s.jobSeq++
	j.id = fmt.Sprintf("%x%04d", hash4(s.gen.seed, 0x10b, uint64(s.jobSeq), 0)&0xffffffff, s.jobSeq)
	s.jobs[j.id] = j
	noLoc, relLoc := s.faults.KickOffNoContentLocation, s.faults.KickOffRelativeContentLocation
	if noLoc {
		s.faultLocked(rec, "KickOffNoContentLocation")
	} else if relLoc {
		s.faultLocked(rec, "KickOffRelativeContentLocation")
	}
	s.mu.Unlock()

	switch {
	case noLoc:
	case relLoc:
		w.Header().Set("Content-Location", fhirPath+"/bulkstatus/"+j.id)
	default:
		w.Header().Set("Content-Location", s.base(r)+"/bulkstatus/"+j.id)
	}
	writeOO(w, http.StatusAccepted, "information", "informational",
		"Your request has been accepted. You can check its status at "+s.base(r)+"/bulkstatus/"+j.id)
	rec.Status = http.StatusAccepted
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, rec *RequestRecord, id string) {
	page := 1
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			rec.Status = http.StatusBadRequest
			writeOO(w, rec.Status, "error", "invalid", "page must be a positive integer")
			return
		}
		page = n
	}
	s.mu.Lock()
	j, ok := s.jobs[id]
	if r.Method == http.MethodDelete {
		s.stats.Deletes++
		if !ok || j.deleted {
			s.mu.Unlock()
			rec.Status = http.StatusNotFound
			writeOO(w, rec.Status, "error", "not-found", "the export job "+id+" does not exist or was deleted")
			return
		}
		j.deleted = true
		s.mu.Unlock()
		rec.Status = http.StatusAccepted
		writeOO(w, rec.Status, "information", "informational", "the export job "+id+" was deleted")
		return
	}
	s.stats.StatusPolls++
	fault := s.statusFaultLocked(w, rec, ok && !j.deleted)
	if fault == "" && (!ok || j.deleted) {
		s.mu.Unlock()
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "the export job "+id+" does not exist or was deleted")
		return
	}
	var body []byte
	var complete bool
	if fault == "" {
		body, complete = s.pollLocked(w, r, j, page)
	}
	s.mu.Unlock()
	if fault != "" {
		writeStatusFault(w, rec, fault)
		return
	}
	if !complete {
		rec.Status = http.StatusAccepted
		if body != nil {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(rec.Status)
		_, _ = w.Write(body)
		return
	}
	if body == nil {
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "manifest page "+strconv.Itoa(page)+" does not exist")
		return
	}
	if s.opts.Compat2018 {
		w.Header().Set("X-FHIR-Links-Require-Authorization", strconv.FormatBool(s.filesAuth))
	}
	w.Header().Set("Content-Type", "application/json")
	rec.Status = http.StatusOK
	w.WriteHeader(rec.Status)
	_, _ = w.Write(body)
}

// statusFaultLocked picks the fault of this status poll, "" for none.
// s.mu is held.
func (s *Server) statusFaultLocked(w http.ResponseWriter, rec *RequestRecord, live bool) string {
	f := &s.faults
	var fault string
	switch {
	case f.StatusGateway > 0:
		f.StatusGateway--
		fault = "StatusGateway"
	case f.Status429 > 0:
		f.Status429--
		fault = "Status429"
		w.Header().Set("Retry-After", s.retryAfterLocked())
	case f.StatusTransient > 0:
		f.StatusTransient--
		fault = "StatusTransient"
	case live && f.FailJob:
		fault = "FailJob"
	}
	if fault != "" {
		s.faultLocked(rec, fault)
	}
	return fault
}

// writeStatusFault answers a status poll with its fault.
func writeStatusFault(w http.ResponseWriter, rec *RequestRecord, fault string) {
	switch fault {
	case "StatusGateway":
		rec.Status = http.StatusBadGateway
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(rec.Status)
		_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>\n"))
	case "Status429":
		rec.Status = http.StatusTooManyRequests
		writeOO(w, rec.Status, "error", "throttled", "polling too fast")
	case "StatusTransient":
		rec.Status = http.StatusInternalServerError
		writeOO(w, rec.Status, "error", "transient", "a transient error occurred; try again")
	case "FailJob":
		rec.Status = http.StatusInternalServerError
		writeOO(w, rec.Status, "fatal", "processing", "the export job failed")
	}
}

// pollLocked answers a poll of a live job: still in progress (with a
// partial manifest when the client allows them) or complete with the
// manifest page. s.mu is held.
func (s *Server) pollLocked(w http.ResponseWriter, r *http.Request, j *job, page int) (body []byte, complete bool) {
	if j.polls < s.opts.PollsBeforeComplete && page == 1 {
		j.polls++
		pct := 100 * j.polls / (s.opts.PollsBeforeComplete + 1)
		w.Header().Set("X-Progress", fmt.Sprintf("%d%% complete, generating files", pct))
		w.Header().Set("Retry-After", s.opts.RetryAfter)
		if j.req.partial {
			body = s.manifestLocked(r, j, 1, false)
		}
		return body, false
	}
	if j.expired >= j.gen {
		j.gen++
		j.expires = time.Time{}
	}
	if j.expires.IsZero() {
		j.expires = time.Now().Add(s.opts.ExpiresAfter)
	}
	w.Header().Set("Expires", j.expires.UTC().Format(http.TimeFormat))
	return s.manifestLocked(r, j, page, true), true
}

// filesBase is where file URLs point.
func (s *Server) filesBase(r *http.Request) string {
	if s.opts.CrossOriginFiles && !s.opts.RedirectFiles && s.filesOrigin != "" {
		return s.filesOrigin + fhirPath
	}
	return s.base(r)
}

// manifestLocked renders manifest page (1-based); nil if the page does not
// exist. Without allowPartialManifests there is one page. Page 1 carries
// deleted[] and error[]; later pages carry only output (and error: []).
func (s *Server) manifestLocked(r *http.Request, j *job, page int, withLink bool) []byte {
	var out, dels, errs []int
	for i, f := range j.files {
		switch f.kind {
		case fileOutput:
			out = append(out, i)
		case fileDeleted:
			dels = append(dels, i)
		case fileError:
			errs = append(errs, i)
		}
	}
	pages := 1
	if j.req.partial {
		pages = max(1, (len(out)+s.opts.ManifestPageSize-1)/s.opts.ManifestPageSize)
		lo := (page - 1) * s.opts.ManifestPageSize
		if page > pages {
			return nil
		}
		out = out[lo:min(len(out), lo+s.opts.ManifestPageSize)]
		if page > 1 {
			dels, errs = nil, nil
		}
	} else if page != 1 {
		return nil
	}
	fb := s.filesBase(r) + "/bulkfiles/" + j.id + "/" + strconv.Itoa(j.gen) + "/"
	x := w{b: make([]byte, 0, 512+len(j.files)*120)}
	x.raw(`{"transactionTime":"`)
	tx := j.tx
	if loc := s.opts.TransactionTimeOffset; loc != nil {
		x.b = tx.In(loc).AppendFormat(x.b, "2006-01-02T15:04:05.000-07:00")
	} else {
		x.b = appendInstant(x.b, tx)
	}
	x.raw(`","request":`)
	x.str(j.req.request)
	if !s.opts.Compat2018 {
		x.raw(`,"requiresAccessToken":`)
		x.raw(strconv.FormatBool(s.filesAuth))
	}
	list := func(name string, idx []int) {
		x.raw(`,"`)
		x.raw(name)
		x.raw(`":[`)
		for n, i := range idx {
			f := &j.files[i]
			if n > 0 {
				x.b = append(x.b, ',')
			}
			x.raw(`{"type":"`)
			switch f.kind {
			case fileError:
				x.raw("OperationOutcome")
			default:
				x.raw(typeName(f.typ))
			}
			x.raw(`","url":`)
			x.str(fb + f.name)
			if f.kind != fileError {
				x.raw(`,"count":`)
				x.int(f.count)
			}
			x.b = append(x.b, '}')
		}
		x.b = append(x.b, ']')
	}
	list("output", out)
	if j.req.hasSince {
		list("deleted", dels)
	}
	list("error", errs)
	if withLink && page < pages {
		x.raw(`,"link":[{"relation":"next","url":`)
		x.str(s.base(r) + "/bulkstatus/" + j.id + "?page=" + strconv.Itoa(page+1))
		x.raw(`}]`)
	}
	x.b = append(x.b, '}')
	return x.b
}
