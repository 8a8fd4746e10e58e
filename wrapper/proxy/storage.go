package proxy

import (
	"net/http"

	"github.com/fluxi2i/fluxi2i/gen"
)

// The storage operations of the spec. The uploads themselves (PUT of the
// bytes, parts, completion) go from the browser to the upload URL
// directly, never through the proxy, as fal's own proxy has it.

func (o operations) PutUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) PutUploadPart(w http.ResponseWriter, r *http.Request, _ gen.UploadToken, _ int) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) CompleteUpload(w http.ResponseWriter, r *http.Request, _ gen.UploadToken) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

// InitiateUpload and InitiateMultipartUpload are refused until the proxy
// forwards them to the storage the client's base URL implies.
func (o operations) InitiateUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateUploadParams) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

func (o operations) InitiateMultipartUpload(w http.ResponseWriter, r *http.Request, _ gen.InitiateMultipartUploadParams) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}
