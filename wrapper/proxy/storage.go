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

// The queue's routes refuse the storage operations: they pass only with a
// target on fal's storage host (storageOps).
func (o operations) InitiateUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateUploadParams) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) InitiateMultipartUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateMultipartUploadParams) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) PutUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) PutUploadPart(w http.ResponseWriter, r *http.Request, _ gen.UploadToken, _ int) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) CompleteUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

// storageOps serves targets on fal's storage host: the two initiates, and
// a refusal for every other operation of the spec.
type storageOps struct{ h *Handler }

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

func (s storageOps) PutUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) PutUploadPart(w http.ResponseWriter, r *http.Request, _ gen.UploadToken, _ int) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) CompleteUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) Submit(w http.ResponseWriter, r *http.Request, _ gen.SubmitParams) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) GetStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.GetStatusParams) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) StreamStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.StreamStatusParams) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) GetResult(w http.ResponseWriter, r *http.Request, _ gen.RequestID) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) Cancel(w http.ResponseWriter, r *http.Request, _ gen.RequestID) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (s storageOps) ListRequestsByEndpoint(w http.ResponseWriter, r *http.Request, _ gen.ListRequestsByEndpointParams) {
	s.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}
