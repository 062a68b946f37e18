//! The authenticated caller.

use super::error::AccessError;

/// A role carried in the token's `roles` claim. Unknown role names are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `platform-admin`: administers the whole gateway.
    PlatformAdmin,
    /// `department-admin`: administers the department named in `department`.
    DepartmentAdmin,
    /// `auditor`: reads and verifies the audit log.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::PlatformAdmin, Role::DepartmentAdmin, Role::Auditor];

    /// The role's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::DepartmentAdmin => "department-admin",
            Role::Auditor => "auditor",
        }
    }

    /// The role named `s`, if it is one we know.
    pub fn from_name(s: &str) -> Option<Role> {
        match s {
            "platform-admin" => Some(Role::PlatformAdmin),
            "department-admin" => Some(Role::DepartmentAdmin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::PlatformAdmin => 1,
            Role::DepartmentAdmin => 2,
            Role::Auditor => 4,
        }
    }
}

/// A verified caller: who (`sub` of `issuer`), which roles, until when.
///
/// Built by the authenticator from a verified token (or by tests with
/// [`Principal::new`]); shared as `Arc<Principal>` from the token cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    sub: String,
    issuer: String,
    roles: u8,
    department: Option<String>,
    exp: u64,
    cnf_x5t_s256: Option<[u8; 32]>,
}

impl Principal {
    /// A principal with the given identity. The authenticator builds these
    /// only from verified tokens; other callers use it in tests.
    pub fn new(
        sub: impl Into<String>,
        issuer: impl Into<String>,
        roles: &[Role],
        department: Option<String>,
        exp: u64,
        cnf_x5t_s256: Option<[u8; 32]>,
    ) -> Self {
        Self {
            sub: sub.into(),
            issuer: issuer.into(),
            roles: roles.iter().fold(0, |acc, r| acc | r.bit()),
            department,
            exp,
            cnf_x5t_s256,
        }
    }

    /// The `sub` claim: the client id (key into clients.toml) or the person.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The issuer that signed the token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `department` claim, if any.
    pub fn department(&self) -> Option<&str> {
        self.department.as_deref()
    }

    /// The token's `exp` (seconds since the Unix epoch).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// The certificate thumbprint the token is bound to (RFC 8705), if any.
    pub fn cnf_x5t_s256(&self) -> Option<&[u8; 32]> {
        self.cnf_x5t_s256.as_ref()
    }

    /// True when the token carries `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles & role.bit() != 0
    }

    /// The known roles the token carries.
    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        [Role::PlatformAdmin, Role::DepartmentAdmin, Role::Auditor]
            .into_iter()
            .filter(|r| self.has_role(*r))
    }

    /// `Ok` when the token carries `role`, else 403 naming the role.
    pub fn require_role(&self, role: Role) -> Result<(), AccessError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(AccessError::RoleRequired(role.as_str()))
        }
    }

    /// `Ok` for a platform admin, or for a department admin whose
    /// `department` claim is exactly `department`; else 403.
    pub fn require_department_admin(&self, department: &str) -> Result<(), AccessError> {
        if self.has_role(Role::PlatformAdmin) {
            return Ok(());
        }
        if !self.has_role(Role::DepartmentAdmin) {
            return Err(AccessError::RoleRequired(Role::DepartmentAdmin.as_str()));
        }
        if self.department.as_deref() == Some(department) {
            Ok(())
        } else {
            Err(AccessError::NotDepartmentAdmin(department.to_string()))
        }
    }

    /// True when the token carries the `auditor` role.
    pub fn is_auditor(&self) -> bool {
        self.has_role(Role::Auditor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn department_admin_of_a_cannot_act_for_b() {
        let p = Principal::new(
            "market-supervision-admin",
            "iss",
            &[Role::DepartmentAdmin],
            Some("market-supervision".into()),
            0,
            None,
        );
        assert!(p.require_department_admin("market-supervision").is_ok());
        assert_eq!(
            p.require_department_admin("fire-rescue"),
            Err(AccessError::NotDepartmentAdmin("fire-rescue".into()))
        );
        assert!(p.require_role(Role::PlatformAdmin).is_err());
        assert!(!p.is_auditor());
    }

    #[test]
    fn department_admin_without_department_claim_is_refused() {
        let p = Principal::new("x", "iss", &[Role::DepartmentAdmin], None, 0, None);
        assert!(p.require_department_admin("fire-rescue").is_err());
    }

    #[test]
    fn platform_admin_passes_every_department_and_plain_client_none() {
        let admin = Principal::new(
            "platform-admin",
            "iss",
            &[Role::PlatformAdmin],
            None,
            0,
            None,
        );
        assert!(admin.require_department_admin("fire-rescue").is_ok());
        let client = Principal::new("portal-binhai", "iss", &[], None, 0, None);
        assert!(client.require_department_admin("fire-rescue").is_err());
        assert!(client.require_role(Role::Auditor).is_err());
        let auditor = Principal::new("auditor", "iss", &[Role::Auditor], None, 0, None);
        assert!(auditor.is_auditor());
        assert!(auditor.require_department_admin("fire-rescue").is_err());
        assert_eq!(auditor.roles().collect::<Vec<_>>(), vec![Role::Auditor]);
    }
}
