package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The operations.
const (
	OpHello    = "hello"
	OpExec     = "exec"
	OpPut      = "put"
	OpGet      = "get"
	OpPowerOff = "poweroff"
	// OpStdin attaches a stream to a running command's standard input.
	OpStdin = "stdin"
)

// Ops lists the operations of this protocol version.
var Ops = []string{OpHello, OpExec, OpStdin, OpPut, OpGet, OpPowerOff}

// Bounds on request fields.
const (
	MaxPath         = 4096 // Dir, put and get paths, in bytes
	MaxUser         = 256  // ExecRequest.User, in bytes
	MaxArgs         = 1 << 16
	MaxEnv          = 1 << 14
	DefaultKillWait = 5 * time.Second
	MaxKillWait     = 5 * time.Minute
)

// Request is the first frame of every stream. Exactly the field for Op is
// set (none for hello and poweroff).
type Request struct {
	Version int           `json:"version"`
	Op      string        `json:"op"`
	Exec    *ExecRequest  `json:"exec,omitempty"`
	Stdin   *StdinRequest `json:"stdin,omitempty"`
	Put     *PathRequest  `json:"put,omitempty"`
	Get     *PathRequest  `json:"get,omitempty"`
}

// StdinRequest names the running command whose standard input the stream
// carries: the id its exec's FrameStarted gave.
type StdinRequest struct {
	Exec uint32 `json:"exec"`
}

// ByteString is a string of any bytes (argv, environment, paths: Linux
// gives them no encoding). JSON strings can only hold Unicode text, so a
// ByteString is carried as a JSON string holding its bytes in base64
// (RFC 4648, standard alphabet, padded).
type ByteString string

// MarshalJSON encodes s as a base64 JSON string.
func (s ByteString) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString([]byte(s)))
}

// UnmarshalJSON decodes a base64 JSON string.
func (s *ByteString) UnmarshalJSON(b []byte) error {
	var enc string
	if err := json.Unmarshal(b, &enc); err != nil {
		return errors.New("a byte string must be a JSON string of base64")
	}
	dec, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		return fmt.Errorf("a byte string is not valid base64: %v", err)
	}
	*s = ByteString(dec)
	return nil
}

// Strings converts byte strings to strings.
func Strings(b []ByteString) []string {
	if b == nil {
		return nil
	}
	out := make([]string, len(b))
	for i, s := range b {
		out[i] = string(s)
	}
	return out
}

// ByteStrings converts strings to byte strings.
func ByteStrings(s []string) []ByteString {
	if s == nil {
		return nil
	}
	out := make([]ByteString, len(s))
	for i, v := range s {
		out[i] = ByteString(v)
	}
	return out
}

// ExecRequest runs a command.
type ExecRequest struct {
	// Argv is the program and its arguments; the program is looked up on
	// the command's PATH unless it holds a slash. Exactly one of Argv and
	// Shell is set.
	Argv []ByteString `json:"argv,omitempty"`
	// Shell is a command line for "sh -c".
	Shell ByteString `json:"shell,omitempty"`
	// Env holds KEY=VALUE entries added to the guest's base environment
	// (later entries win).
	Env []ByteString `json:"env,omitempty"`
	// Dir is the working directory, an absolute path; "" means "/".
	Dir ByteString `json:"dir,omitempty"`
	// User is NAME, UID, NAME:GROUP or UID:GID; "" means the agent's user.
	User string `json:"user,omitempty"`
	// Stdin says the command's standard input comes from the host: on a
	// stdin stream (OpStdin), or ends with FrameCloseStdin; when false the
	// command reads /dev/null (or, with TTY, its terminal gets no input).
	Stdin bool `json:"stdin,omitempty"`
	// TTY gives the command a pseudo-terminal as stdin, stdout, stderr and
	// controlling terminal; Rows and Cols are its size (0: 24x80).
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// KillGraceMillis is how long a command asked to end (FrameKill, or the
	// stream or session gone) has between SIGTERM and SIGKILL; 0 means
	// DefaultKillWait.
	KillGraceMillis int64 `json:"kill_grace_ms,omitempty"`
}

// PathRequest names the guest path of a put (the destination) or a get
// (the source).
type PathRequest struct {
	Path ByteString `json:"path"`
}

// KillGrace is the request's grace between SIGTERM and SIGKILL.
func (e *ExecRequest) KillGrace() time.Duration {
	if e.KillGraceMillis == 0 {
		return DefaultKillWait
	}
	return time.Duration(e.KillGraceMillis) * time.Millisecond
}

// EncodeRequest checks r and encodes it for a FrameRequest.
func EncodeRequest(r *Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRequest {
		return nil, fmt.Errorf("request of %d bytes exceeds the %d-byte bound", len(b), MaxRequest)
	}
	return b, nil
}

// DecodeRequest decodes and checks a FrameRequest payload. Unknown fields
// are refused: a field this side does not know would be silently ignored.
func DecodeRequest(p []byte) (*Request, error) {
	var r Request
	if err := decodeStrict(p, &r); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	// An empty list means what an absent one does ("env":[] and no env):
	// one form, so that a request re-encoded reads back the same.
	if e := r.Exec; e != nil {
		if len(e.Argv) == 0 {
			e.Argv = nil
		}
		if len(e.Env) == 0 {
			e.Env = nil
		}
	}
	return &r, nil
}

func decodeStrict(p []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(p))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// Validate checks every field of the request.
func (r *Request) Validate() error {
	if r.Version != Version {
		return fmt.Errorf("request: protocol version %d not supported (this side speaks %d)", r.Version, Version)
	}
	want := map[string]bool{"exec": r.Exec != nil, "stdin": r.Stdin != nil, "put": r.Put != nil, "get": r.Get != nil}
	var need string
	switch r.Op {
	case OpHello, OpPowerOff:
	case OpExec, OpStdin, OpPut, OpGet:
		need = r.Op
	default:
		return fmt.Errorf("request: op %q unknown (want one of %s)", r.Op, strings.Join(Ops, ", "))
	}
	for field, set := range want {
		if set != (field == need) {
			if set {
				return fmt.Errorf("request: op %q must not have the field %q", r.Op, field)
			}
			return fmt.Errorf("request: op %q needs the field %q", r.Op, field)
		}
	}
	switch r.Op {
	case OpExec:
		return r.Exec.Validate()
	case OpStdin:
		if r.Stdin.Exec == 0 {
			return errors.New("request: stdin: exec id 0 names no command")
		}
	case OpPut:
		return checkPath("put: path", string(r.Put.Path))
	case OpGet:
		return checkPath("get: path", string(r.Get.Path))
	}
	return nil
}

// Validate checks every field of an exec request.
func (e *ExecRequest) Validate() error {
	switch {
	case len(e.Argv) == 0 && e.Shell == "":
		return errors.New("exec: neither argv nor shell given")
	case len(e.Argv) > 0 && e.Shell != "":
		return errors.New("exec: both argv and shell given")
	case len(e.Argv) > MaxArgs:
		return fmt.Errorf("exec: %d arguments exceed the bound of %d", len(e.Argv), MaxArgs)
	case len(e.Argv) > 0 && e.Argv[0] == "":
		return errors.New("exec: argv[0] is empty")
	}
	for i, a := range e.Argv {
		if strings.IndexByte(string(a), 0) >= 0 {
			return fmt.Errorf("exec: argv[%d] holds a NUL byte", i)
		}
	}
	if strings.IndexByte(string(e.Shell), 0) >= 0 {
		return errors.New("exec: shell holds a NUL byte")
	}
	if len(e.Env) > MaxEnv {
		return fmt.Errorf("exec: %d environment entries exceed the bound of %d", len(e.Env), MaxEnv)
	}
	for i, b := range e.Env {
		kv := string(b)
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return fmt.Errorf("exec: env[%d] %q is not KEY=VALUE", i, truncate(kv))
		case k == "":
			return fmt.Errorf("exec: env[%d] %q has an empty name", i, truncate(kv))
		case strings.IndexByte(kv, 0) >= 0:
			return fmt.Errorf("exec: env[%d] holds a NUL byte", i)
		}
	}
	if e.Dir != "" {
		if err := checkPath("exec: dir", string(e.Dir)); err != nil {
			return err
		}
	}
	if e.User != "" {
		if _, err := ParseUser(e.User); err != nil {
			return err
		}
	}
	if !e.TTY && (e.Rows != 0 || e.Cols != 0) {
		return errors.New("exec: rows and cols need tty")
	}
	if e.Rows > MaxWinSize || e.Cols > MaxWinSize {
		return fmt.Errorf("exec: terminal size %dx%d out of range (rows and cols 1-%d, or 0 for the default)", e.Rows, e.Cols, MaxWinSize)
	}
	if e.KillGraceMillis < 0 || e.KillGraceMillis > MaxKillWait.Milliseconds() {
		return fmt.Errorf("exec: kill grace %d ms out of range (0-%d)", e.KillGraceMillis, MaxKillWait.Milliseconds())
	}
	return nil
}

func checkPath(what, p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%s is empty", what)
	case len(p) > MaxPath:
		return fmt.Errorf("%s of %d bytes exceeds the %d-byte bound", what, len(p), MaxPath)
	case p[0] != '/':
		return fmt.Errorf("%s %q is not absolute", what, truncate(p))
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("%s holds a NUL byte", what)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// UserSpec is a parsed ExecRequest.User: a name or a numeric id, and
// optionally a group name or numeric id.
type UserSpec struct {
	Name       string // set when the user is given by name
	UID        uint32 // set when NumericUID
	NumericUID bool
	HasGroup   bool
	Group      string // set when the group is given by name
	GID        uint32 // set when NumericGID
	NumericGID bool
}

// ParseUser parses NAME, UID, NAME:GROUP or UID:GID (names of letters,
// digits, '.', '_', '-', optionally ending in '$' as Samba's do; ids below
// 2^32-1).
func ParseUser(s string) (UserSpec, error) {
	var u UserSpec
	if len(s) > MaxUser {
		return u, fmt.Errorf("exec: user of %d bytes exceeds the %d-byte bound", len(s), MaxUser)
	}
	user, group, hasGroup := strings.Cut(s, ":")
	var err error
	if u.Name, u.UID, u.NumericUID, err = parseID(user); err != nil {
		return u, fmt.Errorf("exec: user %q: %v", truncate(s), err)
	}
	if hasGroup {
		u.HasGroup = true
		if u.Group, u.GID, u.NumericGID, err = parseID(group); err != nil {
			return u, fmt.Errorf("exec: user %q: group: %v", truncate(s), err)
		}
	}
	return u, nil
}

func parseID(s string) (name string, id uint32, numeric bool, err error) {
	if s == "" {
		return "", 0, false, errors.New("empty name")
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 1<<32-1 {
			return "", 0, false, fmt.Errorf("%q is not a valid numeric id (0-%d)", s, uint32(1<<32-2))
		}
		return "", uint32(n), true, nil
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' ||
			c == '$' && i == len(s)-1
		if !ok {
			return "", 0, false, fmt.Errorf("%q holds %q, which a user or group name cannot", s, c)
		}
	}
	return s, 0, false, nil
}

// Hello is the guest's reply to a hello request.
type Hello struct {
	AgentVersion    string `json:"agent_version"`
	ProtocolVersion int    `json:"protocol_version"`
	Hostname        string `json:"hostname"`
	KernelRelease   string `json:"kernel_release"`
	Arch            string `json:"arch"`
	// SystemdPID1 says systemd is the guest's init, so units can be waited
	// for.
	SystemdPID1 bool `json:"systemd_pid1"`
	// PID is the agent's process id in the guest.
	PID int `json:"pid"`
}

// DecodeHello decodes and checks a hello FrameReply payload.
func DecodeHello(p []byte) (*Hello, error) {
	var h Hello
	// Unknown fields are allowed: a newer agent may say more.
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, fmt.Errorf("hello reply: %w", err)
	}
	return &h, h.Validate()
}

// Validate checks the fields of a hello reply.
func (h *Hello) Validate() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"agent_version", h.AgentVersion, 128}, {"hostname", h.Hostname, 255}, {"kernel_release", h.KernelRelease, 256}, {"arch", h.Arch, 32}} {
		if len(f.v) > f.max || !utf8.ValidString(f.v) {
			return fmt.Errorf("hello reply: %s is longer than %d bytes or not UTF-8", f.name, f.max)
		}
	}
	if h.ProtocolVersion != Version {
		return fmt.Errorf("hello reply: the guest agent speaks protocol version %d, this side %d", h.ProtocolVersion, Version)
	}
	if h.PID < 1 || h.PID > 1<<22 {
		return fmt.Errorf("hello reply: pid %d out of range (1-%d)", h.PID, 1<<22)
	}
	return nil
}

// ErrorReply is a FrameError payload: why an operation failed in the
// guest. Status is the exit status a shell would give for a command that
// could not start (125 the agent could not set it up: bad directory or
// user; 126 found but not executable; 127 not found); 0 for operations
// other than exec.
type ErrorReply struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	// Session, set only by a host-side proxy (agent.Proxy) and never by a
	// guest agent, says that the operation failed because the session
	// with the agent ended, and how: one of the Session values below.
	Session string `json:"session,omitempty"`
}

// How a session ended, for ErrorReply.Session.
const (
	SessionAgentGone      = "agent-gone"
	SessionAgentRestarted = "agent-restarted"
	SessionAgentSilent    = "agent-silent"
	SessionVMEnded        = "vm-ended"
	SessionLinkClosed     = "link-closed"
	SessionProtocol       = "protocol"
	SessionVersion        = "version"
	SessionOther          = "other"
)

// EncodeError encodes a FrameError payload, making the message valid
// UTF-8 and cutting it to MaxMessage bytes.
func EncodeError(status int, msg string) []byte {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > MaxMessage {
		cut := MaxMessage - 3
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	if msg == "" {
		msg = "unknown error"
	}
	b, _ := json.Marshal(ErrorReply{Status: status, Message: msg})
	return b
}

// EncodeSessionError encodes the FrameError payload a proxy sends when the
// session behind an operation ended: how (a SessionEnd value) and why.
func EncodeSessionError(session, msg string) []byte {
	var e ErrorReply
	json.Unmarshal(EncodeError(0, msg), &e)
	e.Session = session
	b, _ := json.Marshal(e)
	return b
}

// DecodeError decodes and checks a FrameError payload.
func DecodeError(p []byte) (*ErrorReply, error) {
	var e ErrorReply
	if err := json.Unmarshal(p, &e); err != nil {
		return nil, fmt.Errorf("error frame: %w", err)
	}
	switch {
	case e.Status < 0 || e.Status > 255:
		return nil, fmt.Errorf("error frame: status %d out of range 0-255", e.Status)
	case e.Message == "" || len(e.Message) > MaxMessage || !utf8.ValidString(e.Message):
		return nil, fmt.Errorf("error frame: the message must be 1-%d bytes of UTF-8", MaxMessage)
	}
	return &e, nil
}

// Exit is how a command ended: Status 0-255, where a command killed by
// signal N (Signal, 1-64) has status 128+N as in shells; Signal is 0 for a
// command that exited.
type Exit struct {
	Status int
	Signal int
}

// Encode encodes a FrameExit payload: status as big-endian int32, then the
// signal as one byte.
func (e Exit) Encode() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 5)
	binary.BigEndian.PutUint32(b, uint32(int32(e.Status)))
	b[4] = byte(e.Signal)
	return b, nil
}

// DecodeExit decodes and checks a FrameExit payload.
func DecodeExit(p []byte) (Exit, error) {
	if len(p) != 5 {
		return Exit{}, fmt.Errorf("exit frame of %d bytes: it must have 5", len(p))
	}
	e := Exit{Status: int(int32(binary.BigEndian.Uint32(p))), Signal: int(p[4])}
	return e, e.Validate()
}

// Validate checks the ranges of an exit status.
func (e Exit) Validate() error {
	switch {
	case e.Status < 0 || e.Status > 255:
		return fmt.Errorf("exit status %d out of range 0-255", e.Status)
	case e.Signal < 0 || e.Signal > MaxSignal:
		return fmt.Errorf("exit signal %d out of range 1-%d", e.Signal, MaxSignal)
	case e.Signal != 0 && e.Status != 128+e.Signal:
		return fmt.Errorf("exit status %d for signal %d: it must be %d", e.Status, e.Signal, 128+e.Signal)
	}
	return nil
}

// EncodeSignal encodes a FrameSignal payload.
func EncodeSignal(sig int) ([]byte, error) {
	if sig < 1 || sig > MaxSignal {
		return nil, fmt.Errorf("signal %d out of range 1-%d", sig, MaxSignal)
	}
	return []byte{byte(sig)}, nil
}

// DecodeSignal decodes and checks a FrameSignal payload.
func DecodeSignal(p []byte) (int, error) {
	if len(p) != 1 {
		return 0, fmt.Errorf("signal frame of %d bytes: it must have 1", len(p))
	}
	if p[0] < 1 || p[0] > MaxSignal {
		return 0, fmt.Errorf("signal %d out of range 1-%d", p[0], MaxSignal)
	}
	return int(p[0]), nil
}

// WinSize is a terminal size.
type WinSize struct {
	Rows, Cols uint16
}

// Validate checks that both dimensions are 1-MaxWinSize.
func (w WinSize) Validate() error {
	if w.Rows < 1 || w.Rows > MaxWinSize || w.Cols < 1 || w.Cols > MaxWinSize {
		return fmt.Errorf("terminal size %dx%d out of range (rows and cols 1-%d)", w.Rows, w.Cols, MaxWinSize)
	}
	return nil
}

// Encode encodes a FrameResize payload.
func (w WinSize) Encode() ([]byte, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, w.Rows)
	binary.BigEndian.PutUint16(b[2:], w.Cols)
	return b, nil
}

// DecodeResize decodes and checks a FrameResize payload.
func DecodeResize(p []byte) (WinSize, error) {
	if len(p) != 4 {
		return WinSize{}, fmt.Errorf("resize frame of %d bytes: it must have 4", len(p))
	}
	w := WinSize{Rows: binary.BigEndian.Uint16(p), Cols: binary.BigEndian.Uint16(p[2:])}
	return w, w.Validate()
}

// EncodeStarted encodes a FrameStarted payload: exec's command id (1 or
// more), or 0 for put.
func EncodeStarted(id uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, id)
	return b
}

// DecodeStarted decodes and checks a FrameStarted payload: the command id
// of an exec (exec set), which is never 0; 0 for put.
func DecodeStarted(p []byte, exec bool) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("started frame of %d bytes: it must have 4", len(p))
	}
	n := binary.BigEndian.Uint32(p)
	switch {
	case exec && n == 0:
		return 0, errors.New("started frame: command id 0 for an exec")
	case !exec && n != 0:
		return 0, fmt.Errorf("started frame: command id %d for a copy", n)
	}
	return n, nil
}

// The outputs FrameCloseOutput names.
const (
	OutputStdout = 1
	OutputStderr = 2
)

// DecodeCloseOutput decodes and checks a FrameCloseOutput payload.
func DecodeCloseOutput(p []byte) (int, error) {
	if len(p) != 1 || (p[0] != OutputStdout && p[0] != OutputStderr) {
		return 0, fmt.Errorf("close-output frame %x: it must be one byte, 1 (stdout) or 2 (stderr)", p)
	}
	return int(p[0]), nil
}
