package fetch

import (
	"context"
	"errors"
)

var errTODO = errors.New("fetch: not implemented yet")

// Client is a Bulk Data client for one server.
type Client struct{ o Options }

// New validates o and applies defaults.
func New(o Options) (*Client, error) { return &Client{o: o}, nil }

// KickOff starts an export and returns its absolute status URL.
func (c *Client) KickOff(ctx context.Context, r Request) (string, error) { return "", errTODO }

// Wait polls statusURL until the export completes, following link next pages.
func (c *Client) Wait(ctx context.Context, statusURL string) (*Manifest, error) { return nil, errTODO }

// Delete cancels the job or releases its files.
func (c *Client) Delete(ctx context.Context, statusURL string) error { return errTODO }

// Files lists output, then deleted, then error files, with Index set.
func (m *Manifest) Files() []File { return nil }

// Download fetches one file into path (gzip-compressed), atomically, with retries.
func (c *Client) Download(ctx context.Context, m *Manifest, f File, path string) (Spooled, error) {
	return Spooled{}, errTODO
}

// DownloadAll downloads every file not already present with Options.Parallel workers.
func (c *Client) DownloadAll(ctx context.Context, m *Manifest, dir string, skip func(File) (Spooled, bool), done func(Spooled) error) error {
	return errTODO
}

// Attachments fetches Attachment.url values found in spooled files into dir.
func (c *Client) Attachments(ctx context.Context, m *Manifest, spooled []Spooled, dir string) ([]Attachment, error) {
	return nil, errTODO
}

// redact drops the query string, which may hold a signed-URL secret.
func redact(u string) string {
	if i := indexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

func indexAny(s, chars string) int {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return i
			}
		}
	}
	return -1
}
