package configs

import (
	"net/url"
	"regexp"
	"strings"
)

// namespaceRE is what a configured namespace must look like: a stable
// name (ehr_a, payer.claims), not a URL.
var namespaceRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,62}$`)

// NamespaceOf returns the source's namespace: the configured one, else
// its base URL normalised (NormalizeBaseURL).
func (s Source) NamespaceOf() string {
	if s.Namespace != "" {
		return s.Namespace
	}
	return NormalizeBaseURL(s.BaseURL)
}

// NormalizeBaseURL reduces a FHIR base URL to scheme://host[:port]/path:
// scheme and host in lower case, the scheme's default port dropped, no
// user info, query, fragment or trailing slash. Two spellings of one
// server's base give one namespace.
func NormalizeBaseURL(base string) string {
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil || u.Host == "" {
		return strings.TrimRight(strings.TrimSpace(base), "/")
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	if p := u.Port(); p != "" && (scheme != "http" || p != "80") && (scheme != "https" || p != "443") {
		host += ":" + p
	}
	return scheme + "://" + host + strings.TrimRight(u.EscapedPath(), "/")
}
