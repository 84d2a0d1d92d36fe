// Package shell quotes words for a POSIX shell, for the command lines
// sonix-run prints to be pasted: --dry-run scripts, reproduce lines.
package shell

import "strings"

// Quote quotes s for a POSIX shell, leaving plainly safe words bare. A
// newline stays inside the quotes (the word spans lines, as the shell
// reads it): never put a quoted word in a comment; use Comment.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes each word and joins them with spaces.
func Join(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = Quote(w)
	}
	return strings.Join(q, " ")
}

// Comment makes s a comment: every line of it starts with "# ", so that no
// line of s can become a command.
func Comment(s string) string {
	return "# " + strings.ReplaceAll(strings.ReplaceAll(s, "\r", `\r`), "\n", "\n# ")
}
