//! The one-thing service on the data plane: the scenario list and guides
//! (what a scenario needs, in Chinese or English), and cases (accept now,
//! supply later): a scenario run kept under `X-Case-Id`, read back, and
//! refreshed part by part.
//!
//! Authorisation is the scenario's: a client sees, reads and refreshes
//! only what it may run. Cases are keyed by client, so another client's
//! case id is simply not found.

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::json;

use super::{DataPlane, RequestCtx, Resp, json_response, scenario_status};
use crate::auth::{Attribution, ClientGrants, Principal};
use crate::case::{Case, CaseError, case_id_from_path};
use crate::error::{GatewayError, RequestError};
use crate::lang::Lang;
use crate::scenario::{Mode, Scenario};
use crate::state::State;

/// Characters escaped when a case id is put back into a path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::negotiate(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A JSON answer in `lang`, marked so caches keep one copy per language.
fn localized<T: serde::Serialize>(v: &T, lang: Lang) -> Resp {
    let mut resp = json_response(StatusCode::OK, v);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.tag()),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    resp
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Partial => "partial",
        Mode::AllOrNothing => "all-or-nothing",
    }
}

impl DataPlane {
    /// `GET /v1/scenarios`: the scenarios this client may run.
    pub(super) fn scenario_list(
        &self,
        state: &State,
        grants: &ClientGrants,
        headers: &HeaderMap,
    ) -> Resp {
        let lang = lang_of(headers);
        let list: Vec<_> = state
            .scenarios
            .iter()
            .filter(|s| grants.check_scenario(&s.name).is_ok())
            .map(|s| {
                json!({
                    "scenario": s.name,
                    "title": s.guide.title.get(lang),
                    "summary": s.guide.summary.get(lang),
                })
            })
            .collect();
        localized(&list, lang)
    }

    /// `GET /v1/scenarios/{scenario}`: the guide (404 unknown, 403 not granted).
    pub(super) fn scenario_guide(
        &self,
        state: &State,
        grants: &ClientGrants,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<Resp, GatewayError> {
        let spec = state
            .scenarios
            .get(name)
            .ok_or_else(|| RequestError::NotFound(format!("no scenario `{name}`")))?;
        grants.check_scenario(name)?;
        let lang = lang_of(headers);
        let parts: Vec<_> = spec
            .parts
            .iter()
            .map(|p| {
                let department = state
                    .datasets
                    .get(&p.dataset)
                    .map(|d| d.department.as_str())
                    .unwrap_or_default();
                let title = state
                    .settings
                    .departments
                    .get(department)
                    .map(|d| match lang {
                        Lang::Zh => d.title_zh.as_deref().unwrap_or(&d.title),
                        Lang::En => d.title.as_str(),
                    });
                json!({
                    "part": p.name,
                    "dataset": p.dataset,
                    "subject": p.subject_kind,
                    "department": department,
                    "department_title": title,
                    "supply_later": !p.required,
                    "bring": p.bring.get(lang),
                })
            })
            .collect();
        let g = &spec.guide;
        let subjects: BTreeSet<_> = spec.kinds().collect();
        let body = json!({
            "scenario": spec.name,
            "lang": lang.tag(),
            "title": g.title.get(lang),
            "summary": g.summary.get(lang),
            "time_limit_days": g.time_limit_days,
            "legal_basis": g.legal_basis.iter().map(|l| l.get(lang)).collect::<Vec<_>>(),
            "mode": mode_name(spec.mode),
            "supply_later_days": spec.supply_later.as_secs() / 86_400,
            "subjects": subjects,
            "parts": parts,
        });
        Ok(localized(&body, lang))
    }

    /// Checks the path's case id and records it (with the other attribution
    /// headers) for the audit record; the path's id replaces any `X-Case-Id`.
    fn case_attribution(
        &self,
        ctx: &mut RequestCtx,
        raw_id: &str,
        headers: &HeaderMap,
    ) -> Result<String, GatewayError> {
        let case_id = case_id_from_path(raw_id)?;
        let mut attribution = Attribution::from_headers(headers)?;
        attribution.case_id = Some(case_id.clone());
        ctx.attribution = Some(attribution);
        Ok(case_id)
    }

    /// `GET /v1/cases/{case_id}`.
    pub(super) async fn case_read(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        principal: &Principal,
        grants: &ClientGrants,
        raw_id: &str,
        headers: &HeaderMap,
    ) -> Result<Resp, GatewayError> {
        let case_id = self.case_attribution(ctx, raw_id, headers)?;
        ctx.ratelimit = Some(state.protect.check_client(principal.sub(), None)?);
        let case = self
            .cases
            .load(principal.sub(), &case_id)
            .await?
            .ok_or_else(|| CaseError::NotFound(case_id.clone()))?;
        ctx.scenario = Some(case.scenario.clone());
        grants.check_scenario(&case.scenario)?;
        Ok(json_response(
            StatusCode::OK,
            &case.view(self.cases.now(), None),
        ))
    }

    /// `POST /v1/cases/{case_id}/refresh`: fetches the outstanding parts
    /// (cached shared records count), one refresh of a case at a time.
    pub(super) async fn case_refresh(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        principal: &Principal,
        grants: &ClientGrants,
        raw_id: &str,
        headers: &HeaderMap,
    ) -> Result<Resp, GatewayError> {
        let case_id = self.case_attribution(ctx, raw_id, headers)?;
        grants.check_purpose(ctx.attribution.as_ref().and_then(|a| a.purpose.as_deref()))?;
        ctx.ratelimit = Some(state.protect.check_client(principal.sub(), None)?);
        // A second refresh of the same case waits here, then finds only
        // what the first left outstanding: no double fetch, no lost update.
        let _lock = self.cases.lock(principal.sub(), &case_id).await;
        let mut case = self
            .cases
            .load(principal.sub(), &case_id)
            .await?
            .ok_or_else(|| CaseError::NotFound(case_id.clone()))?;
        ctx.scenario = Some(case.scenario.clone());
        let spec = state
            .scenarios
            .get(&case.scenario)
            .cloned()
            .ok_or_else(|| CaseError::ScenarioGone(case_id.clone()))?;
        grants.check_scenario(&spec.name)?;
        let outstanding: BTreeSet<String> = case
            .outstanding()
            .into_iter()
            .filter(|n| spec.parts.iter().any(|p| p.name == *n))
            .map(str::to_string)
            .collect();
        let mut fetched = BTreeMap::new();
        if !outstanding.is_empty() {
            let (reply, _) = self
                .run_parts(
                    state,
                    ctx,
                    principal,
                    grants,
                    &spec,
                    &case.subjects,
                    Some(&outstanding),
                )
                .await?;
            case.refreshes += 1;
            case.apply(&spec, &reply.parts, self.cases.now());
            self.cases.save(&case).await?;
            fetched = reply.parts;
        }
        Ok(json_response(
            StatusCode::OK,
            &case.view(self.cases.now(), Some(&fetched)),
        ))
    }

    /// `POST /v1/scenarios/{scenario}` with `X-Case-Id`: runs the scenario
    /// and keeps the outcome as a case when it is accepted (200; a 424 of an
    /// all-or-nothing scenario keeps nothing). Running again under the same
    /// id updates the case's parts (its dates stay); under the same id for
    /// another scenario or other subjects: 409 before anything is fetched.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_as_case(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        principal: &Principal,
        grants: &ClientGrants,
        spec: &Scenario,
        subjects: &BTreeMap<String, String>,
        case_id: &str,
    ) -> Result<Resp, GatewayError> {
        let client = principal.sub();
        let _lock = self.cases.lock(client, case_id).await;
        let existing = self.cases.load(client, case_id).await?;
        if let Some(c) = &existing
            && (c.scenario != spec.name || &c.subjects != subjects)
        {
            return Err(CaseError::Mismatch(case_id.to_string()).into());
        }
        let (reply, failed_required) = self
            .run_parts(state, ctx, principal, grants, spec, subjects, None)
            .await?;
        let status = scenario_status(spec, failed_required);
        if status != StatusCode::OK {
            return Ok(json_response(status, &reply));
        }
        let now = self.cases.now();
        let case = match existing {
            Some(mut c) => {
                c.apply(spec, &reply.parts, now);
                c
            }
            None => Case::accept(client, case_id, spec, subjects, &reply, now),
        };
        self.cases.save(&case).await?;
        let path = format!("/v1/cases/{}", utf8_percent_encode(case_id, SEGMENT));
        let mut body = serde_json::to_value(&reply).unwrap_or_default();
        body["case"] = json!({
            "case_id": case.case_id,
            "accepted_at": crate::audit::time::format_rfc3339_micros(case.accepted_at),
            "supply_by": crate::audit::time::format_rfc3339_micros(case.supply_by),
            "complete": case.complete(),
            "outstanding": case.outstanding(),
            "path": path,
        });
        let mut resp = json_response(StatusCode::OK, &body);
        if let Ok(v) = HeaderValue::from_str(&path) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }
}
