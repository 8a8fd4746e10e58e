package queuetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
)

// fal's file storage, as fal's JS client uses it for a Blob or File
// input: initiate (with the key) answers an upload_url and a file_url; the
// bytes are PUT to upload_url with no key (or in parts, then completed);
// the file is served at file_url, and a job whose image_url is one of
// those URLs reads the uploaded bytes. Uploads count against the server's
// budgets (MaxUploadBytes for uploads alone, and MaxBytes with everything
// else the server holds) and each is capped at the body cap; they expire
// with the retention time.

// MaxUploadBytes bounds the bytes of all uploads held at once (default 256
// MiB); past it an initiate or a PUT gets 429 with Retry-After.
func MaxUploadBytes(n int64) Option { return func(c *config) { c.maxUploads = n } }

// WithoutStorage answers fal's storage calls with 404, as the aggregator
// does.
func WithoutStorage() Option { return func(c *config) { c.noStorage = true } }

const defaultMaxUploads = 256 << 20

// fileRoute is where uploaded files are served (the fake CDN).
const fileRoute = "/storage/files/"

// upload is one file being uploaded or uploaded.
type upload struct {
	token, key  string
	name, ctype string
	multipart   bool
	parts       map[int][]byte
	data        []byte
	done        bool
	created     time.Time
	size        int64 // bytes held, parts included
}

func (o operations) InitiateUpload(w http.ResponseWriter, r *http.Request, p gen.InitiateUploadParams) {
	o.s.api(OpStorage, func(x *exchange, body []byte) answer { return o.s.initiate(x.r, body, false) })(w, r)
}

func (o operations) InitiateMultipartUpload(w http.ResponseWriter, r *http.Request, p gen.InitiateMultipartUploadParams) {
	o.s.api(OpStorage, func(x *exchange, body []byte) answer { return o.s.initiate(x.r, body, true) })(w, r)
}

func (o operations) PutUpload(w http.ResponseWriter, r *http.Request, token gen.UploadToken) {
	o.s.open(w, r, func(body []byte) answer { return o.s.putUpload(r, token, 0, body) })
}

func (o operations) PutUploadPart(w http.ResponseWriter, r *http.Request, token gen.UploadToken, part int) {
	o.s.open(w, r, func(body []byte) answer { return o.s.putUpload(r, token, part, body) })
}

func (o operations) CompleteUpload(w http.ResponseWriter, r *http.Request, token gen.UploadToken) {
	o.s.open(w, r, func(body []byte) answer { return o.s.complete(token, body) })
}

// open serves a storage call that needs no key (the upload URL is the
// authority), with CORS for a page's direct PUT.
func (s *Server) open(w http.ResponseWriter, r *http.Request, act func(body []byte) answer) {
	cors(w)
	x, body := s.admitAs(w, r, OpStorage, false)
	if x == nil {
		return
	}
	x.reply(act(body))
}

// cors lets any page read uploaded and generated files and PUT uploads:
// their URLs are unguessable, and they carry no credential.
func cors(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, PUT, POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", "600")
}

// MediaPaths are the path prefixes below which a Server serves what a
// browser fetches or sends itself: result images, uploads and uploaded
// files. A front that gives the server its own origin as PublicURL
// (fluxi2i proxy, for the built-in simulator) mounts the server there.
func MediaPaths() []string {
	put, err := gen.NewPutUploadRequestWithBody("http://h", "t", "", nil)
	if err != nil {
		panic(err)
	}
	return []string{"/files/", fileRoute, path.Dir(put.URL.Path) + "/"}
}

// storageRoutes registers the preflight of uploads and the uploaded
// files; the storage operations themselves are gen's routes.
func (s *Server) storageRoutes(m *http.ServeMux) {
	put, err := gen.NewPutUploadRequestWithBody("http://h", "t", "", nil)
	if err != nil {
		panic(err)
	}
	m.HandleFunc("OPTIONS "+path.Dir(put.URL.Path)+"/", func(w http.ResponseWriter, r *http.Request) {
		cors(w)
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET "+fileRoute+"{key}/{name}", s.uploadedFile)
	m.HandleFunc("OPTIONS "+fileRoute+"{key}/{name}", func(w http.ResponseWriter, r *http.Request) {
		cors(w)
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *Server) initiate(r *http.Request, body []byte, multipart bool) answer {
	if s.cfg.noStorage {
		return platformError(http.StatusNotFound, "Not Found")
	}
	var req gen.UploadRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ContentType == "" || req.FileName == "" {
		return platformError(http.StatusBadRequest, "the body must be {content_type, file_name}")
	}
	now := time.Now()
	u := &upload{token: newKey(), key: newKey(), name: fileName(req.FileName), ctype: req.ContentType, multipart: multipart, created: now}
	if multipart {
		u.parts = map[int][]byte{}
	}
	s.mu.Lock()
	s.evictUploads(now)
	if s.uploadBytes >= s.maxUploads() {
		s.mu.Unlock()
		return s.storageFull()
	}
	s.uploads[u.token] = u
	s.uploadFiles[u.key] = u
	s.mu.Unlock()
	root := s.root(r)
	put, err := gen.NewPutUploadRequestWithBody(root, u.token, u.ctype, nil)
	if err != nil {
		return platformError(http.StatusInternalServerError, err.Error())
	}
	file := root + fileRoute + u.key + "/" + url.PathEscape(u.name)
	return jsonAnswer(http.StatusOK, gen.UploadTarget{UploadURL: put.URL.String(), FileURL: file})
}

// fileName keeps the base name of a file name, in letters, digits and
// ".-_" (the rest becomes "_").
func fileName(n string) string {
	n = path.Base(strings.ReplaceAll(n, "\\", "/"))
	b := []byte(n)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		return "file"
	}
	return string(b[:min(len(b), 100)])
}

func (s *Server) maxUploads() int64 {
	if s.cfg.maxUploads > 0 {
		return s.cfg.maxUploads
	}
	return defaultMaxUploads
}

func (s *Server) storageFull() answer {
	a := platformError(http.StatusTooManyRequests, fmt.Sprintf("the server holds %d bytes of uploads, its limit: try again when some have expired", s.maxUploads()))
	a.header.Set("Retry-After", strconv.Itoa(int(max(s.cfg.retention/10, time.Second).Seconds())))
	return a
}

// root is the server's own origin for the URLs it hands out, without the
// base path (storage, like the history, is not below it): the PublicURL,
// or the request's origin without one.
func (s *Server) root(r *http.Request) string {
	if s.cfg.publicURL != "" {
		return s.cfg.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) putUpload(r *http.Request, token string, part int, body []byte) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uploads[token]
	switch {
	case u == nil:
		return platformError(http.StatusNotFound, "no such upload")
	case u.done || (part == 0) == u.multipart:
		return platformError(http.StatusBadRequest, "this upload does not take that PUT")
	case u.size+int64(len(body)) > s.cfg.maxBody:
		return platformError(http.StatusRequestEntityTooLarge, fmt.Sprintf("a file is at most %d bytes", s.cfg.maxBody))
	case s.uploadBytes+int64(len(body)) > s.maxUploads(), !s.budget.take("", int64(len(body))):
		return s.storageFull()
	}
	s.uploadBytes += int64(len(body))
	u.size += int64(len(body))
	if !u.multipart {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			u.ctype = ct
		}
		u.data, u.done = body, true
		return answer{code: http.StatusOK, header: http.Header{}}
	}
	if old, ok := u.parts[part]; ok {
		s.uploadBytes -= int64(len(old))
		u.size -= int64(len(old))
		s.budget.release("", int64(len(old)))
	}
	u.parts[part] = body
	return jsonAnswer(http.StatusOK, gen.UploadPart{PartNumber: part, Etag: strconv.Itoa(part) + "-" + strconv.Itoa(len(body))})
}

func (s *Server) complete(token string, body []byte) answer {
	var c gen.UploadCompletion
	if err := json.Unmarshal(body, &c); err != nil || len(c.Parts) == 0 {
		return platformError(http.StatusBadRequest, "the body must be {parts: [{partNumber, etag}]}")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uploads[token]
	if u == nil || !u.multipart || u.done {
		return platformError(http.StatusNotFound, "no such multipart upload")
	}
	nums := make([]int, 0, len(c.Parts))
	for _, p := range c.Parts {
		if _, ok := u.parts[p.PartNumber]; !ok || slices.Contains(nums, p.PartNumber) {
			return platformError(http.StatusBadRequest, fmt.Sprintf("part %d was not uploaded (or named twice)", p.PartNumber))
		}
		nums = append(nums, p.PartNumber)
	}
	slices.Sort(nums)
	var b bytes.Buffer
	b.Grow(int(u.size))
	for _, n := range nums {
		b.Write(u.parts[n])
	}
	u.data, u.parts, u.done = b.Bytes(), nil, true
	return answer{code: http.StatusOK, header: http.Header{}}
}

// evictUploads forgets uploads older than the retention time. s.mu is
// held.
func (s *Server) evictUploads(now time.Time) {
	if s.cfg.retention <= 0 {
		return
	}
	for token, u := range s.uploads {
		if now.Sub(u.created) > s.cfg.retention {
			delete(s.uploads, token)
			delete(s.uploadFiles, u.key)
			s.uploadBytes -= u.size
			s.budget.release("", u.size)
		}
	}
}

func (s *Server) uploadedFile(w http.ResponseWriter, r *http.Request) {
	cors(w)
	s.mu.Lock()
	u := s.uploadFiles[r.PathValue("key")]
	var data []byte
	var ctype string
	if u != nil && u.done && r.PathValue("name") == u.name {
		data, ctype = u.data, u.ctype
	}
	s.mu.Unlock()
	if data == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

// resolveUpload gives the model an input whose image_url names one of
// this server's uploads as a data URI of the uploaded bytes, as fal's
// runner would read the file; the data URI's bytes are reserved in the
// budget (ctx is the model's) until release is called.
func (s *Server) resolveUpload(ctx context.Context, in gen.Input) (gen.Input, func()) {
	none := func() {}
	u, err := url.Parse(in.ImageURL)
	if err != nil || !strings.HasPrefix(u.Path, fileRoute) {
		return in, none
	}
	key, name, _ := strings.Cut(strings.TrimPrefix(u.Path, fileRoute), "/")
	s.mu.Lock()
	up := s.uploadFiles[key]
	var data []byte
	var ctype string
	if up != nil && up.done && name == up.name {
		data, ctype = up.data, up.ctype
	}
	s.mu.Unlock()
	if data == nil {
		return in, none
	}
	size := len("data:;base64,") + len(ctype) + base64.StdEncoding.EncodedLen(len(data))
	release, err := Reserve(ctx, int64(size))
	if err != nil {
		return in, none // no room: the model reads the URL as it is
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString("data:" + ctype + ";base64,")
	enc := base64.NewEncoder(base64.StdEncoding, &b)
	enc.Write(data)
	enc.Close()
	in.ImageURL = b.String()
	return in, release
}
