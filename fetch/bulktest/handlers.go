package bulktest

import "net/http"

type job struct{}

func (s *Server) serveMain(w http.ResponseWriter, r *http.Request)        { http.NotFound(w, r) }
func (s *Server) serveFilesOrigin(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
