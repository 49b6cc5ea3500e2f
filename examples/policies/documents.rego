# Documents for the quickstart: a document's owner may read and write it; an auditor may
# read any document; nobody else may do anything.
#
# The input (tower_api_guard::policy::PolicyInput):
#   input.principal.id                the caller's subject
#   input.principal.roles             the caller's roles
#   input.action.name                 "read" (GET) or "write" (PUT)
#   input.resource.type               "Document"
#   input.resource.id                 the {id} path parameter
#   input.resource.attributes.owner   the owner's subject; absent for an unknown document
#
# The query is data.guard.allow: exactly `true` allows; anything else denies.
package guard

default allow := false

# The owner reads and writes their document.
allow if {
	is_document
	input.action.name in {"read", "write"}
	input.resource.attributes.owner == input.principal.id
}

# An auditor reads any document.
allow if {
	is_document
	input.action.name == "read"
	"auditor" in input.principal.roles
}

is_document if input.resource.type == "Document"
