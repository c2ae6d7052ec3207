package testsupport

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
)

// RequestBody reads r's body, decompressing it when its Content-Encoding
// is gzip (as OTLP exporters may send it).
func RequestBody(r *http.Request) ([]byte, error) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fmt.Errorf("read gzip request body: %w", err)
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}
