package wire

import (
	"encoding/json"
	"strconv"
)

// JSON-RPC error codes used by mcpcage.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeServerGone answers requests left pending when the MCP server
	// exits or the session ends (implementation-defined server error).
	CodeServerGone = -32000
	// CodeDenied answers requests refused by mcpcage's policy.
	CodeDenied = -32001
	// CodeTooLarge answers a message larger than max_message_bytes.
	CodeTooLarge = -32002
)

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
