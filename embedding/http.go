package embedding

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const (
	defaultBatchSize = 32 // Text Embeddings Inference's default client batch limit
	defaultTimeout   = 30 * time.Second
	defaultRetries   = 3
	defaultBackoff   = 250 * time.Millisecond

	maxBackoff       = 30 * time.Second
	maxResponseBytes = 256 << 20
	maxErrorBody     = 512
	drainLimit       = 64 << 10
)

// HTTPOption configures NewHTTP.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	model     string
	apiKey    string
	dims      int
	batchSize int
	timeout   time.Duration
	retries   int
	backoff   time.Duration
	client    *http.Client
	err       error
}

func (c *httpConfig) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// WithModel sets the "model" field of each request. OpenAI and Ollama
// require it; Text Embeddings Inference ignores it.
func WithModel(model string) HTTPOption {
	return func(c *httpConfig) { c.model = model }
}

// WithAPIKey sends key as a bearer token. The key never appears in errors.
func WithAPIKey(key string) HTTPOption {
	return func(c *httpConfig) { c.apiKey = key }
}

// WithDimensions declares the vector size the endpoint must return and sends
// it as the request's "dimensions" field, which models with shortenable
// embeddings honour. A response of any other size is an error.
func WithDimensions(n int) HTTPOption {
	return func(c *httpConfig) {
		if n < 1 || n > MaxDimensions {
			c.fail(fmt.Errorf("embedding: dimensions %d out of range [1, %d]", n, MaxDimensions))
			return
		}
		c.dims = n
	}
}

// WithBatchSize caps the number of texts sent in one request; larger inputs
// are split. The default is 32.
func WithBatchSize(n int) HTTPOption {
	return func(c *httpConfig) {
		if n < 1 {
			c.fail(fmt.Errorf("embedding: batch size %d must be positive", n))
			return
		}
		c.batchSize = n
	}
}

// WithTimeout bounds each request attempt, including reading the response.
// Zero disables the per-request limit, leaving only the caller's context.
// The default is 30s.
func WithTimeout(d time.Duration) HTTPOption {
	return func(c *httpConfig) {
		if d < 0 {
			c.fail(fmt.Errorf("embedding: timeout %s must not be negative", d))
			return
		}
		c.timeout = d
	}
}

// WithRetries retries a request up to n more times after a network error,
// a timeout, 429 or a 5xx response, waiting a jittered exponential backoff
// starting at base (or the server's Retry-After) between attempts. Other
// responses are not retried. The default is 3 retries from 250ms.
func WithRetries(n int, base time.Duration) HTTPOption {
	return func(c *httpConfig) {
		if n < 0 || base < 0 {
			c.fail(fmt.Errorf("embedding: retries %d and backoff %s must not be negative", n, base))
			return
		}
		c.retries, c.backoff = n, base
	}
}

// WithHTTPClient sets the client used for requests, for custom transports,
// proxies or TLS settings. Its own Timeout, if any, also applies.
func WithHTTPClient(client *http.Client) HTTPOption {
	return func(c *httpConfig) {
		if client == nil {
			c.fail(errors.New("embedding: nil http client"))
			return
		}
		c.client = client
	}
}

// HTTPError reports a response from the embeddings endpoint that was not a
// success.
type HTTPError struct {
	Endpoint   string // request URL with credentials redacted
	StatusCode int
	Body       string // start of the response body, credentials redacted
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("embedding: POST %s: status %d %s", e.Endpoint, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests ||
		(code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported)
}

type httpEmbedder struct {
	url           string
	display       string   // url safe to show
	secrets       []string // strings scrubbed from response bodies
	longestSecret int64
	cfg           httpConfig
	learned       atomic.Int64 // dimensions seen in the first response when not configured
}

// NewHTTP returns an Embedder backed by an OpenAI-compatible embeddings API
// (OpenAI, Ollama, Text Embeddings Inference, vLLM). Requests go to
// {endpoint}/v1/embeddings; an endpoint already ending in /v1 or
// /embeddings is used as given.
//
// Without WithDimensions, Dimensions reports 0 until the first successful
// response fixes the size; later responses of another size are errors.
// Texts that are empty or whitespace are not sent: they get zero vectors,
// as with NewLocal, since APIs such as OpenAI reject empty input.
func NewHTTP(endpoint string, opts ...HTTPOption) (Embedder, error) {
	cfg := httpConfig{
		batchSize: defaultBatchSize,
		timeout:   defaultTimeout,
		retries:   defaultRetries,
		backoff:   defaultBackoff,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		// url.Error quotes the input, which may hold credentials.
		return nil, errors.New("embedding: endpoint is not a valid URL")
	}
	display := redactURL(u)
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("embedding: endpoint %s: want an http or https URL with a host", display)
	}
	path := strings.TrimRight(u.Path, "/")
	switch {
	case strings.HasSuffix(path, "/embeddings"):
	case strings.HasSuffix(path, "/v1"):
		path += "/embeddings"
	default:
		path += "/v1/embeddings"
	}
	u.Path, u.RawPath, u.Fragment = path, "", ""
	if cfg.client == nil {
		cfg.client = &http.Client{}
	}
	h := &httpEmbedder{url: u.String(), display: redactURL(u), cfg: cfg}
	h.secrets = secretsOf(u, cfg.apiKey)
	for _, s := range h.secrets {
		h.longestSecret = max(h.longestSecret, int64(len(s)))
	}
	return h, nil
}

// redactURL hides userinfo and query values, either of which may carry a
// credential.
func redactURL(u *url.URL) string {
	r := *u
	if r.User != nil {
		r.User = url.User("redacted")
	}
	if r.RawQuery != "" {
		q := r.Query()
		for k := range q {
			q[k] = []string{"redacted"}
		}
		r.RawQuery = q.Encode()
	}
	r.Fragment = ""
	return r.String()
}

// secretsOf lists what must never appear in an error, longest first so a
// secret containing another is removed whole. The API key and password are
// always scrubbed; short user names and query values are likely not secret
// and scrubbing them would mangle bodies.
func secretsOf(u *url.URL, apiKey string) []string {
	var s []string
	add := func(v string, minLen int) {
		if v != "" && len(v) >= minLen {
			s = append(s, v)
		}
	}
	add(apiKey, 1)
	if u.User != nil {
		add(u.User.Username(), 4)
		if p, ok := u.User.Password(); ok {
			add(p, 1)
		}
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			add(v, 8)
		}
	}
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	return s
}

func (h *httpEmbedder) Dimensions() int {
	if h.cfg.dims > 0 {
		return h.cfg.dims
	}
	return int(h.learned.Load())
}

func (h *httpEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	pending := make([]int, 0, len(texts)) // indexes of texts worth sending
	for i, t := range texts {
		if strings.TrimSpace(t) != "" {
			pending = append(pending, i)
		}
	}
	batch := make([]string, 0, min(len(pending), h.cfg.batchSize))
	for start := 0; start < len(pending); start += h.cfg.batchSize {
		idx := pending[start:min(start+h.cfg.batchSize, len(pending))]
		batch = batch[:0]
		for _, i := range idx {
			batch = append(batch, texts[i])
		}
		vecs, err := h.request(ctx, batch)
		if err != nil {
			if len(pending) > len(idx) {
				nb := (len(pending) + h.cfg.batchSize - 1) / h.cfg.batchSize
				return nil, fmt.Errorf("%w (batch %d of %d)", err, start/h.cfg.batchSize+1, nb)
			}
			return nil, err
		}
		for j, i := range idx {
			out[i] = vecs[j]
		}
	}
	if len(pending) == len(texts) {
		return out, nil
	}
	d := h.Dimensions()
	if d == 0 {
		return nil, fmt.Errorf("embedding: POST %s: cannot size zero vectors for blank texts before the first response; set WithDimensions", h.display)
	}
	zeros := make([]float32, (len(texts)-len(pending))*d)
	for i := range out {
		if out[i] == nil {
			out[i], zeros = zeros[:d:d], zeros[d:]
		}
	}
	return out, nil
}

type embeddingsRequest struct {
	Model      string   `json:"model,omitempty"`
	Input      []string `json:"input"`
	Dimensions int      `json:"dimensions,omitempty"`
}

type embeddingsResponse struct {
	Data []struct {
		Index     *int      `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
}

// request sends one batch, retrying transient failures.
func (h *httpEmbedder) request(ctx context.Context, texts []string) ([][]float32, error) {
	body, err := json.Marshal(embeddingsRequest{Model: h.cfg.model, Input: texts, Dimensions: h.cfg.dims})
	if err != nil {
		return nil, fmt.Errorf("embedding: encode request: %w", err)
	}
	attempts := h.cfg.retries + 1
	for attempt := 1; ; attempt++ {
		vecs, retryAfter, err := h.attempt(ctx, body, len(texts))
		if err == nil {
			return vecs, nil
		}
		if retryAfter < 0 || attempt == attempts {
			if attempt > 1 {
				return nil, fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
			}
			return nil, err
		}
		wait := retryAfter
		if wait == 0 {
			wait = jitteredBackoff(h.cfg.backoff, attempt)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; retry abandoned: %w", err, ctx.Err())
		case <-t.C:
		}
	}
}

// jitteredBackoff returns a wait in [d/2, d] for d = base·2^(attempt-1),
// capped, so that many sink replicas hitting one overloaded server spread out.
func jitteredBackoff(base time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// attempt makes one request. On failure retryAfter is negative if the error
// is permanent, zero to retry with the usual backoff, or the wait the server
// asked for.
func (h *httpEmbedder) attempt(ctx context.Context, body []byte, n int) (vecs [][]float32, retryAfter time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return nil, -1, fmt.Errorf("embedding: POST %s: %w", h.display, err)
	}
	actx := ctx
	if h.cfg.timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, h.cfg.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(actx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return nil, -1, fmt.Errorf("embedding: POST %s: build request: %w", h.display, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if h.cfg.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.cfg.apiKey)
	}
	resp, err := h.cfg.client.Do(req)
	if err != nil {
		return nil, h.transportRetry(ctx), h.transportError(ctx, actx, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit)) // lets the connection be reused
		resp.Body.Close()
	}()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Read past the snippet length so that a credential straddling the
		// cut is still recognised and removed whole.
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+h.longestSecret))
		herr := &HTTPError{Endpoint: h.display, StatusCode: resp.StatusCode, Body: h.scrub(snippet)}
		if !retryableStatus(resp.StatusCode) {
			return nil, -1, herr
		}
		return nil, parseRetryAfter(resp.Header.Get("Retry-After")), herr
	}

	var parsed embeddingsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&parsed); err != nil {
		if ctx.Err() == nil && actx.Err() != nil {
			return nil, 0, h.transportError(ctx, actx, err)
		}
		var netErr interface{ Timeout() bool }
		if errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, h.transportRetry(ctx), fmt.Errorf("embedding: POST %s: read response: %w", h.display, err)
		}
		return nil, -1, fmt.Errorf("embedding: POST %s: decode response: %w", h.display, err)
	}
	vecs, err = h.order(&parsed, n)
	if err != nil {
		return nil, -1, fmt.Errorf("embedding: POST %s: %w", h.display, err)
	}
	return vecs, 0, nil
}

// transportRetry makes failures to reach the server retryable unless the
// caller gave up.
func (h *httpEmbedder) transportRetry(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return -1
	}
	return 0
}

func (h *httpEmbedder) transportError(ctx, actx context.Context, err error) error {
	// url.Error repeats the full request URL; keep only the cause.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if ctx.Err() == nil && actx.Err() != nil {
		return fmt.Errorf("embedding: POST %s: request timed out after %s: %w", h.display, h.cfg.timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("embedding: POST %s: %w", h.display, err)
}

// order checks the response against the request and puts vectors in input
// order; servers may return data in any order, tagged by index.
func (h *httpEmbedder) order(r *embeddingsResponse, n int) ([][]float32, error) {
	if len(r.Data) != n {
		return nil, fmt.Errorf("response has %d embeddings for %d inputs", len(r.Data), n)
	}
	want := h.Dimensions()
	vecs := make([][]float32, n)
	for pos, d := range r.Data {
		i := pos
		if d.Index != nil {
			i = *d.Index
		}
		if i < 0 || i >= n {
			return nil, fmt.Errorf("response index %d out of range for %d inputs", i, n)
		}
		if vecs[i] != nil {
			return nil, fmt.Errorf("response repeats index %d", i)
		}
		got := len(d.Embedding)
		switch {
		case got == 0:
			return nil, fmt.Errorf("response embedding %d is empty", i)
		case want == 0:
			if got > MaxDimensions {
				return nil, fmt.Errorf("response embedding %d has %d dimensions, more than the supported %d", i, got, MaxDimensions)
			}
			if !h.learned.CompareAndSwap(0, int64(got)) {
				want = h.Dimensions() // a concurrent call fixed the size first
				if got != want {
					return nil, fmt.Errorf("endpoint returned %d-dimensional embeddings, earlier responses had %d", got, want)
				}
			}
			want = got
		case got != want:
			if h.cfg.dims > 0 {
				return nil, fmt.Errorf("endpoint returned %d-dimensional embeddings, configured dimensions are %d", got, want)
			}
			return nil, fmt.Errorf("endpoint returned %d-dimensional embeddings, earlier responses had %d", got, want)
		}
		vecs[i] = d.Embedding
	}
	return vecs, nil
}

// scrub turns a body snippet into a one-line, valid UTF-8 string without
// any configured credential, in case the server echoes the request.
func (h *httpEmbedder) scrub(b []byte) string {
	s := string(b)
	for _, secret := range h.secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	if len(s) > maxErrorBody {
		s = s[:maxErrorBody] + "..."
	}
	s = strings.ToValidUTF8(s, string(utf8.RuneError)) // the cut may split a rune
	return strings.Join(strings.Fields(s), " ")
}

// parseRetryAfter reads a Retry-After header as delay-seconds or an
// HTTP-date, capped so a hostile or confused server cannot stall the sink.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(min(secs, int(maxBackoff/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxBackoff)
}
