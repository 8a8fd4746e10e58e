package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// fal's storage through the proxy, as fal's own proxy allows it: only the
// two upload initiates (single and multipart, storage_type=fal-cdn-v3) on
// fal's storage host, forwarded with the server's key to the storage the
// client's base URL implies (fal's for fal's queue, the base URL's origin
// otherwise: the simulator serves it there). The bytes go from the
// browser to the upload URL directly, never through the proxy. In front
// of the aggregator, which has no storage, an initiate is refused with a
// message saying that data URIs work.

// falStorageHost is the host of fal's storage, as fal's JS client targets it.
const falStorageHost = "rest.fal.ai"

// noStorage is the refusal of an upload where the upstream has no storage.
const noStorage = "file uploads are not available through this server's upstream (it has no fal storage): send the image as a data URI (data:image/png;base64,...) in image_url instead"

// maxInitiate caps an initiate's body: {content_type, file_name}.
const maxInitiate = 16 << 10

// storageOps serves targets on fal's storage host: the two initiates, and
// a refusal for every other operation of the spec.
type storageOps struct {
	refuseAll
	h *Handler
}

func (s storageOps) InitiateUpload(w http.ResponseWriter, r *http.Request, p gen.InitiateUploadParams) {
	s.initiate(w, r, p.StorageType.Valid(), func(server string, body io.Reader) (*http.Request, error) {
		return gen.NewInitiateUploadRequestWithBody(server, &p, "application/json", body)
	})
}

func (s storageOps) InitiateMultipartUpload(w http.ResponseWriter, r *http.Request, p gen.InitiateMultipartUploadParams) {
	s.initiate(w, r, p.StorageType.Valid(), func(server string, body io.Reader) (*http.Request, error) {
		return gen.NewInitiateMultipartUploadRequestWithBody(server, &p, "application/json", body)
	})
}

func (s storageOps) initiate(w http.ResponseWriter, r *http.Request, storageType bool, build func(string, io.Reader) (*http.Request, error)) {
	h := s.h
	if !storageType {
		h.refuse(w, r, http.StatusBadRequest, "parameter", "storage_type: only "+string(gen.StorageTypeFalCdnV3)+" is proxied")
		return
	}
	if aggregator(h.f.Server()) {
		h.refuse(w, r, http.StatusNotImplemented, "operation", noStorage)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInitiate))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.refuse(w, r, http.StatusRequestEntityTooLarge, "input", "an upload initiate is {content_type, file_name}")
		return
	case err != nil:
		h.refuse(w, r, http.StatusBadRequest, "input", "reading the body: "+err.Error())
		return
	}
	var in gen.UploadRequest
	if err := json.Unmarshal(b, &in); err != nil || in.ContentType == "" || in.FileName == "" {
		h.refuse(w, r, http.StatusBadRequest, "input", "an upload initiate is {content_type, file_name}, both non-empty")
		return
	}
	body, _ := json.Marshal(in) // the spec's fields only
	req, err := build(h.f.StorageServer()+"/", bytes.NewReader(body))
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		return
	}
	if v := r.Header.Get("X-Fal-Object-Lifecycle"); v != "" && json.Valid([]byte(v)) {
		req.Header.Set("X-Fal-Object-Lifecycle", v)
	}
	h.forward(w, r, req, opUpload, "", nil)
}

// aggregator reports the aggregator's base URL, which has no storage.
func aggregator(server string) bool {
	u, err := url.Parse(server)
	a, _ := url.Parse(wrapper.AggregatorURL)
	return err == nil && strings.EqualFold(u.Hostname(), a.Hostname())
}

// refuseAll answers every operation of gen.ServerInterface with the
// refusal of a target that is not proxied (the history is the whole
// account's, never a browser's to read; the uploads' bytes go to their
// URL directly); operations and storageOps embed it and serve their own.
type refuseAll struct{ h *Handler }

func (f refuseAll) refuse(w http.ResponseWriter, r *http.Request) {
	f.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (f refuseAll) Submit(w http.ResponseWriter, r *http.Request, _ gen.SubmitParams) { f.refuse(w, r) }
func (f refuseAll) GetStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.GetStatusParams) {
	f.refuse(w, r)
}
func (f refuseAll) StreamStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.StreamStatusParams) {
	f.refuse(w, r)
}
func (f refuseAll) GetResult(w http.ResponseWriter, r *http.Request, _ gen.RequestID) { f.refuse(w, r) }
func (f refuseAll) Cancel(w http.ResponseWriter, r *http.Request, _ gen.RequestID)    { f.refuse(w, r) }
func (f refuseAll) ListRequestsByEndpoint(w http.ResponseWriter, r *http.Request, _ gen.ListRequestsByEndpointParams) {
	f.refuse(w, r)
}
func (f refuseAll) InitiateUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateUploadParams) {
	f.refuse(w, r)
}
func (f refuseAll) InitiateMultipartUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateMultipartUploadParams) {
	f.refuse(w, r)
}
func (f refuseAll) PutUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	f.refuse(w, r)
}
func (f refuseAll) PutUploadPart(w http.ResponseWriter, r *http.Request, _ gen.UploadToken, _ int) {
	f.refuse(w, r)
}
func (f refuseAll) CompleteUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	f.refuse(w, r)
}
