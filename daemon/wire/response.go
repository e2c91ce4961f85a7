package wire

import (
	"encoding/json"
	"strconv"
)

// JSON-RPC error codes used by mcpcage. The codes of mcpcage's own errors
// lie in -32000..-32019, which JSON-RPC leaves to implementations and MCP
// 2026-07-28 keeps implementation-defined, and avoid every code the MCP
// SDKs give a meaning: the TypeScript SDK's ErrorCode names -32000
// ConnectionClosed and -32001 RequestTimeout, MCP before 2026-07-28 uses
// -32002 for resource not found, and -32020..-32099 are MCP's. Each of
// these errors also carries data {"mcpcage": class, "reason": ...} (see
// [ErrorData]), so a client can tell it from the server's own errors.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeServerGone answers requests left pending when the MCP server
	// exits or the session ends (the TypeScript SDK's ConnectionClosed,
	// which is what happened).
	CodeServerGone = -32000
	// CodeDenied answers requests refused by mcpcage's policy.
	CodeDenied = -32003
	// CodeTooLarge answers a message larger than max_message_bytes.
	CodeTooLarge = -32004
	// CodeSignIn answers a request to a remote server the delegating
	// user has not signed in to (or whose sign-in expired).
	CodeSignIn = -32005
	// CodeUpstream answers a request a remote server could not be reached
	// for, or refused at the HTTP level.
	CodeUpstream = -32006
)

// Classes of mcpcage's own errors, the "mcpcage" member of [ErrorData].
const (
	ClassDenied     = "denied"
	ClassServerGone = "server_gone"
	ClassTooLarge   = "too_large"
)

// ErrorData is the data of an error response mcpcage makes itself.
type ErrorData struct {
	Mcpcage string `json:"mcpcage"`
	Reason  string `json:"reason,omitempty"`
}

// ErrorResponse builds a newline-terminated JSON-RPC error response for
// the raw id (nil or empty means null). data may be nil.
func ErrorResponse(id []byte, code int, message string, data any) []byte {
	b := make([]byte, 0, 96+len(message))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	if len(id) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, id...)
	}
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	msg, _ := json.Marshal(message) // a string always marshals
	b = append(b, msg...)
	if data != nil {
		if d, err := json.Marshal(data); err == nil {
			b = append(b, `,"data":`...)
			b = append(b, d...)
		}
	}
	b = append(b, "}}\n"...)
	return b
}
