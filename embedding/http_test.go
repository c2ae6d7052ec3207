package embedding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiCall is what the fake endpoint saw in one request.
type apiCall struct {
	Path  string
	Auth  string
	Model string
	Input []string
	Dims  *int // the "dimensions" field, nil when absent
}

// fakeAPI is an OpenAI-compatible /v1/embeddings server. It embeds with a
// Local of its own size and returns the data in reverse order, so clients
// that ignore "index" get vectors attached to the wrong texts.
type fakeAPI struct {
	srv  *httptest.Server
	dims int

	mu    sync.Mutex
	calls []apiCall
	// intercept, when set, may answer call n (1-based) itself by returning true.
	intercept func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newFakeAPI(t *testing.T, dims int) *fakeAPI {
	t.Helper()
	f := &fakeAPI{dims: dims}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) setIntercept(fn func(n int, w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.intercept = fn
	f.mu.Unlock()
}

func (f *fakeAPI) setDims(d int) {
	f.mu.Lock()
	f.dims = d
	f.mu.Unlock()
}

func (f *fakeAPI) Calls() []apiCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiCall(nil), f.calls...)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model      string   `json:"model"`
		Input      []string `json:"input"`
		Dimensions *int     `json:"dimensions"`
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, `{"error":"want POST application/json"}`, http.StatusMethodNotAllowed)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, apiCall{Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Model: req.Model, Input: req.Input, Dims: req.Dimensions})
	n, intercept, dims := len(f.calls), f.intercept, f.dims
	f.mu.Unlock()
	if intercept != nil && intercept(n, w, r) {
		return
	}
	if r.URL.Path != "/v1/embeddings" {
		http.NotFound(w, r)
		return
	}
	vecs, err := NewLocal(dims).Embed(r.Context(), req.Input)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	resp := struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
	}{Object: "list", Model: req.Model}
	for i := len(vecs) - 1; i >= 0; i-- {
		resp.Data = append(resp.Data, item{Object: "embedding", Index: i, Embedding: vecs[i]})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func mustHTTP(t *testing.T, endpoint string, opts ...HTTPOption) Embedder {
	t.Helper()
	e, err := NewHTTP(endpoint, opts...)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	return e
}

// fastRetries keeps retry tests quick while still exercising the backoff.
func fastRetries(n int) HTTPOption { return WithRetries(n, time.Millisecond) }

func TestHTTPEmbed(t *testing.T) {
	api := newFakeAPI(t, 48)
	texts := []string{"gm farcaster", "東京は暑い 🚀", "the quick brown fox"}
	want, err := NewLocal(48).Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	for _, endpoint := range []string{api.srv.URL, api.srv.URL + "/", api.srv.URL + "/v1", api.srv.URL + "/v1/", api.srv.URL + "/v1/embeddings"} {
		t.Run(endpoint, func(t *testing.T) {
			e := mustHTTP(t, endpoint, WithModel("nomic-embed-text"), WithDimensions(48))
			if e.Dimensions() != 48 {
				t.Fatalf("Dimensions() = %d, want 48", e.Dimensions())
			}
			got, err := e.Embed(context.Background(), texts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range texts {
				if vectorDigest(got[i]) != vectorDigest(want[i]) {
					t.Errorf("vector %d (%q) does not match its text", i, texts[i])
				}
			}
			calls := api.Calls()
			last := calls[len(calls)-1]
			if last.Path != "/v1/embeddings" || last.Model != "nomic-embed-text" || last.Dims == nil || *last.Dims != 48 {
				t.Errorf("request = %+v, want path /v1/embeddings, model nomic-embed-text, dimensions 48", last)
			}
			if last.Auth != "" {
				t.Errorf("Authorization %q sent without an API key", last.Auth)
			}
		})
	}
}

func TestHTTPLearnsDimensions(t *testing.T) {
	api := newFakeAPI(t, 24)
	e := mustHTTP(t, api.srv.URL)
	if d := e.Dimensions(); d != 0 {
		t.Fatalf("Dimensions() before any call = %d, want 0", d)
	}
	if _, err := e.Embed(context.Background(), []string{"gm"}); err != nil {
		t.Fatal(err)
	}
	if d := e.Dimensions(); d != 24 {
		t.Fatalf("Dimensions() after a call = %d, want 24", d)
	}
	if c := api.Calls()[0]; c.Dims != nil || c.Model != "" {
		t.Errorf("request carried dimensions %v / model %q without options", c.Dims, c.Model)
	}

	api.setDims(32)
	_, err := e.Embed(context.Background(), []string{"gn"})
	if err == nil || !strings.Contains(err.Error(), "32") || !strings.Contains(err.Error(), "24") {
		t.Fatalf("size change: err = %v, want one naming 32 and 24", err)
	}
}

func TestHTTPDimensionsMismatch(t *testing.T) {
	api := newFakeAPI(t, 32)
	e := mustHTTP(t, api.srv.URL, WithDimensions(64), fastRetries(3))
	_, err := e.Embed(context.Background(), []string{"gm"})
	if err == nil {
		t.Fatal("Embed succeeded with a 32-dimensional response, want mismatch error")
	}
	for _, want := range []string{"32", "64", api.srv.URL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := len(api.Calls()); n != 1 {
		t.Errorf("%d requests, want 1: a wrong size is not transient", n)
	}
}

func TestHTTPBatching(t *testing.T) {
	api := newFakeAPI(t, 16)
	e := mustHTTP(t, api.srv.URL, WithBatchSize(7))
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("cast %d", i)
	}
	got, err := e.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := NewLocal(16).Embed(context.Background(), texts)
	for i := range texts {
		if vectorDigest(got[i]) != vectorDigest(want[i]) {
			t.Fatalf("vector %d does not match %q", i, texts[i])
		}
	}
	calls := api.Calls()
	if len(calls) != 15 {
		t.Fatalf("%d requests, want 15 for 100 texts in batches of 7", len(calls))
	}
	var sent []string
	for i, c := range calls {
		if len(c.Input) > 7 || (i < 14 && len(c.Input) != 7) {
			t.Errorf("request %d has %d inputs", i, len(c.Input))
		}
		sent = append(sent, c.Input...)
	}
	if strings.Join(sent, "|") != strings.Join(texts, "|") {
		t.Error("texts were not sent exactly once, in order")
	}

	got, err = e.Embed(context.Background(), nil)
	if err != nil || len(got) != 0 || len(api.Calls()) != 15 {
		t.Errorf("Embed(nil) = %d vectors, %v, %d requests; want nothing sent", len(got), err, len(api.Calls())-15)
	}
}

func TestHTTPBlankTexts(t *testing.T) {
	api := newFakeAPI(t, 8)
	e := mustHTTP(t, api.srv.URL, WithDimensions(8))
	got, err := e.Embed(context.Background(), []string{"", "gm", " \t\n", "gn"})
	if err != nil {
		t.Fatal(err)
	}
	if calls := api.Calls(); len(calls) != 1 || strings.Join(calls[0].Input, "|") != "gm|gn" {
		t.Fatalf("requests = %+v, want one carrying only the non-blank texts", calls)
	}
	for _, i := range []int{0, 2} {
		if len(got[i]) != 8 || l2(got[i]) != 0 {
			t.Errorf("blank text %d: got %v, want 8 zeros", i, got[i])
		}
	}
	for _, i := range []int{1, 3} {
		if l2(got[i]) == 0 {
			t.Errorf("text %d: zero vector", i)
		}
	}
	if len(api.Calls()) != 1 {
		t.Fatal("blank-only input was sent")
	}

	unsized := mustHTTP(t, api.srv.URL)
	if _, err := unsized.Embed(context.Background(), []string{"", " "}); err == nil || !strings.Contains(err.Error(), "WithDimensions") {
		t.Errorf("blank-only input with unknown size: err = %v, want one suggesting WithDimensions", err)
	}
}

func TestHTTPRetries(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		failures  int // responses with status before the server recovers
		retries   int
		wantCalls int
		wantErr   bool
	}{
		{name: "503 then success", status: 503, failures: 2, retries: 3, wantCalls: 3},
		{name: "429 then success", status: 429, failures: 1, retries: 1, wantCalls: 2},
		{name: "502 then success", status: 502, failures: 1, retries: 1, wantCalls: 2},
		{name: "503 exhausts retries", status: 503, failures: 10, retries: 2, wantCalls: 3, wantErr: true},
		{name: "no retries", status: 500, failures: 1, retries: 0, wantCalls: 1, wantErr: true},
		{name: "400 not retried", status: 400, failures: 1, retries: 3, wantCalls: 1, wantErr: true},
		{name: "401 not retried", status: 401, failures: 1, retries: 3, wantCalls: 1, wantErr: true},
		{name: "404 not retried", status: 404, failures: 1, retries: 3, wantCalls: 1, wantErr: true},
		{name: "413 not retried", status: 413, failures: 1, retries: 3, wantCalls: 1, wantErr: true},
		{name: "501 not retried", status: 501, failures: 1, retries: 3, wantCalls: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, 8)
			api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > tt.failures {
					return false
				}
				if tt.status == 429 {
					w.Header().Set("Retry-After", "0")
				}
				http.Error(w, fmt.Sprintf(`{"error":{"message":"failure %d"}}`, n), tt.status)
				return true
			})
			e := mustHTTP(t, api.srv.URL, fastRetries(tt.retries))
			got, err := e.Embed(context.Background(), []string{"gm", "gn"})
			if n := len(api.Calls()); n != tt.wantCalls {
				t.Errorf("%d requests, want %d", n, tt.wantCalls)
			}
			if !tt.wantErr {
				if err != nil || len(got) != 2 {
					t.Fatalf("Embed = %d vectors, %v; want success", len(got), err)
				}
				return
			}
			var herr *HTTPError
			if !errors.As(err, &herr) || herr.StatusCode != tt.status {
				t.Fatalf("err = %v, want *HTTPError with status %d", err, tt.status)
			}
			msg := err.Error()
			for _, want := range []string{api.srv.URL + "/v1/embeddings", fmt.Sprint(tt.status), fmt.Sprintf("failure %d", tt.wantCalls)} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if tt.wantCalls > 1 && !strings.Contains(msg, fmt.Sprintf("after %d attempts", tt.wantCalls)) {
				t.Errorf("error %q does not say how many attempts were made", msg)
			}
		})
	}
}

func TestHTTPTimeout(t *testing.T) {
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done() // hang until the client gives up
		return true
	})
	e := mustHTTP(t, api.srv.URL, WithTimeout(50*time.Millisecond), fastRetries(1))
	_, err := e.Embed(context.Background(), []string{"gm"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("err = %v, want a per-request timeout", err)
	}
	if n := len(api.Calls()); n != 2 {
		t.Errorf("%d requests, want 2: timeouts are retried", n)
	}
}

func TestHTTPSlowBodyTimeout(t *testing.T) {
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":[{"index":0,"embedding":[0.1,`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	e := mustHTTP(t, api.srv.URL, WithTimeout(50*time.Millisecond), fastRetries(0))
	_, err := e.Embed(context.Background(), []string{"gm"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout while reading the body", err)
	}
}

func TestHTTPContextCancelledDuringBackoff(t *testing.T) {
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return true
	})
	e := mustHTTP(t, api.srv.URL, WithRetries(5, time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := e.Embed(ctx, []string{"gm"})
	var herr *HTTPError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &herr) || herr.StatusCode != 503 {
		t.Fatalf("err = %v, want the caller's deadline and the 503 that caused the wait", err)
	}
	if n := len(api.Calls()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := e.Embed(cancelled, []string{"gm"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v, want context.Canceled", err)
	}
	if n := len(api.Calls()); n != 1 {
		t.Errorf("request sent with a cancelled context")
	}
}

func TestHTTPRetriesNetworkErrors(t *testing.T) {
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > 1 {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // drop the connection without a response
		}
		return true
	})
	e := mustHTTP(t, api.srv.URL, fastRetries(1))
	if _, err := e.Embed(context.Background(), []string{"gm"}); err != nil {
		t.Fatalf("Embed after a dropped connection: %v", err)
	}
	if n := len(api.Calls()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestHTTPAPIKey(t *testing.T) {
	const key = "sk-test-4f9a1c7e2b8d6053"
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			return false
		}
		// Servers do echo credentials back in error bodies.
		http.Error(w, `{"error":"invalid key `+r.Header.Get("Authorization")+`"}`, http.StatusUnauthorized)
		return true
	})
	e := mustHTTP(t, api.srv.URL, WithAPIKey(key))
	if _, err := e.Embed(context.Background(), []string{"gm"}); err != nil {
		t.Fatal(err)
	}
	if got := api.Calls()[0].Auth; got != "Bearer "+key {
		t.Errorf("Authorization = %q, want the bearer key", got)
	}
	_, err := e.Embed(context.Background(), []string{"gm"})
	if err == nil {
		t.Fatal("Embed succeeded on 401")
	}
	if strings.Contains(err.Error(), key) || strings.Contains(fmt.Sprintf("%+v", err), key) {
		t.Fatalf("error leaks the API key: %v", err)
	}
	if !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q should show the status and the redacted body", err)
	}
}

func TestHTTPRedactsEndpointCredentials(t *testing.T) {
	const password, token = "hunter2hunter2", "querysecret12345"
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "bad gateway for "+r.URL.RawQuery, http.StatusBadGateway)
		return true
	})
	withCreds := strings.Replace(api.srv.URL, "http://", "http://svc:"+password+"@", 1) + "/?api_key=" + token

	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := strings.Replace(closed.URL, "http://", "http://svc:"+password+"@", 1) + "/?api_key=" + token
	closed.Close()

	for name, endpoint := range map[string]string{"status": withCreds, "network": closedURL} {
		t.Run(name, func(t *testing.T) {
			e := mustHTTP(t, endpoint, fastRetries(1))
			_, err := e.Embed(context.Background(), []string{"gm"})
			if err == nil {
				t.Fatal("Embed succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, password) || strings.Contains(msg, token) {
				t.Fatalf("error leaks a credential: %s", msg)
			}
			if !strings.Contains(msg, "redacted@127.0.0.1") || !strings.Contains(msg, "api_key=redacted") {
				t.Errorf("error %q should name the endpoint with credentials redacted", msg)
			}
		})
	}
}

func TestHTTPMalformedResponses(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"not json", `<html>oops</html>`, "decode response"},
		{"too few", `{"data":[{"index":0,"embedding":[1,0]}]}`, "1 embeddings for 2 inputs"},
		{"duplicate index", `{"data":[{"index":0,"embedding":[1,0]},{"index":0,"embedding":[0,1]}]}`, "repeats index 0"},
		{"index out of range", `{"data":[{"index":0,"embedding":[1,0]},{"index":2,"embedding":[0,1]}]}`, "index 2 out of range"},
		{"empty embedding", `{"data":[{"index":0,"embedding":[]},{"index":1,"embedding":[0,1]}]}`, "is empty"},
		{"ragged", `{"data":[{"index":0,"embedding":[1,0]},{"index":1,"embedding":[0,1,0]}]}`, "3-dimensional"},
		{"base64", `{"data":[{"index":0,"embedding":"AAAA"},{"index":1,"embedding":"AAAA"}]}`, "decode response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, 2)
			api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tt.body)
				return true
			})
			e := mustHTTP(t, api.srv.URL, fastRetries(2))
			_, err := e.Embed(context.Background(), []string{"gm", "gn"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), api.srv.URL) {
				t.Fatalf("err = %v, want one containing %q and the endpoint", err, tt.want)
			}
			if n := len(api.Calls()); n != 1 {
				t.Errorf("%d requests, want 1: malformed responses are not retried", n)
			}
		})
	}
}

func TestHTTPPositionalWithoutIndex(t *testing.T) {
	api := newFakeAPI(t, 2)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		_, _ = io.WriteString(w, `{"data":[{"embedding":[1,0]},{"embedding":[0,1]}]}`)
		return true
	})
	got, err := mustHTTP(t, api.srv.URL).Embed(context.Background(), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0][0] != 1 || got[1][1] != 1 {
		t.Errorf("got %v, want data in response order", got)
	}
}

func TestHTTPCustomClient(t *testing.T) {
	api := newFakeAPI(t, 4)
	var seen int
	var mu sync.Mutex
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		seen++
		mu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})}
	if _, err := mustHTTP(t, api.srv.URL, WithHTTPClient(client)).Embed(context.Background(), []string{"gm"}); err != nil {
		t.Fatal(err)
	}
	if seen != 1 {
		t.Errorf("custom client saw %d requests, want 1", seen)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewHTTPInvalid(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		opts     []HTTPOption
		want     string
	}{
		{"scheme", "ftp://example.com", nil, "http or https"},
		{"no host", "http://", nil, "http or https"},
		{"relative", "/v1/embeddings", nil, "http or https"},
		{"unparsable", "http://user:s3cretpass@host:port/", nil, "not a valid URL"},
		{"dimensions", "http://h", []HTTPOption{WithDimensions(0)}, "dimensions 0"},
		{"too many dimensions", "http://h", []HTTPOption{WithDimensions(MaxDimensions + 1)}, "out of range"},
		{"batch", "http://h", []HTTPOption{WithBatchSize(0)}, "batch size"},
		{"timeout", "http://h", []HTTPOption{WithTimeout(-time.Second)}, "timeout"},
		{"retries", "http://h", []HTTPOption{WithRetries(-1, time.Second)}, "retries"},
		{"backoff", "http://h", []HTTPOption{WithRetries(1, -time.Second)}, "backoff"},
		{"client", "http://h", []HTTPOption{WithHTTPClient(nil)}, "http client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewHTTP(tt.endpoint, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewHTTP = %v, %v; want error containing %q", e, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cretpass") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestJitteredBackoff(t *testing.T) {
	base := 100 * time.Millisecond
	for attempt := 1; attempt <= 20; attempt++ {
		full := min(base<<min(attempt-1, 30), maxBackoff)
		for range 50 {
			d := jitteredBackoff(base, attempt)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
	if d := jitteredBackoff(0, 3); d != 0 {
		t.Errorf("zero base gives %s, want 0", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"2", 2 * time.Second},
		{"-5", 0},
		{"99999999999", maxBackoff},
		{"soon", 0},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
		{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), maxBackoff},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestHTTPErrorBodyTruncation(t *testing.T) {
	const key = "sk-live-0123456789abcdef0123"
	api := newFakeAPI(t, 8)
	api.setIntercept(func(n int, w http.ResponseWriter, r *http.Request) bool {
		// The key straddles the snippet limit, and the body is far longer.
		http.Error(w, strings.Repeat("e", maxErrorBody-12)+key+strings.Repeat("x", 10000), http.StatusBadRequest)
		return true
	})
	_, err := mustHTTP(t, api.srv.URL, WithAPIKey(key)).Embed(context.Background(), []string{"gm"})
	var herr *HTTPError
	if !errors.As(err, &herr) {
		t.Fatalf("err = %v, want *HTTPError", err)
	}
	if strings.Contains(herr.Body, key[:8]) {
		t.Errorf("body snippet leaks part of the key: ...%s", herr.Body[len(herr.Body)-40:])
	}
	if len(herr.Body) > maxErrorBody+len("...") || !strings.HasSuffix(herr.Body, "...") {
		t.Errorf("body snippet is %d bytes, want it cut at %d", len(herr.Body), maxErrorBody)
	}
}
