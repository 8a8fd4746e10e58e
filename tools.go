//go:build tools

package fluxi2i

// Pins the code generator in go.mod so that `go generate` runs the same
// version everywhere.
import _ "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen"
