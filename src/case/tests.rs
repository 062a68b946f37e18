use std::time::Duration;

use super::*;
use crate::lang::Localized;
use crate::scenario::{Guide, Mode, Part};

fn text(s: &str) -> Localized {
    Localized {
        zh: s.into(),
        en: s.into(),
    }
}

fn spec() -> Scenario {
    let part = |name: &str, required| Part {
        name: name.into(),
        dataset: name.into(),
        subject_kind: "uscc".into(),
        required,
        timeout: Duration::from_secs(1),
        bring: text("x"),
    };
    Scenario {
        name: "open-restaurant".into(),
        title: "Open a restaurant".into(),
        mode: Mode::Partial,
        parts: vec![part("licence", true), part("fire", false)],
        guide: Guide {
            title: text("t"),
            summary: text("s"),
            time_limit_days: 5,
            legal_basis: vec![text("l")],
        },
        supply_later: Duration::from_secs(30 * 86_400),
    }
}

fn result(status: PartStatus) -> PartResult {
    PartResult {
        status,
        http_status: if status == PartStatus::Ok { 200 } else { 404 },
        record: (status == PartStatus::Ok).then(|| serde_json::json!({"no": 1})),
        detail: None,
        signed: None,
    }
}

fn reply(fire: PartStatus) -> ScenarioReply {
    ScenarioReply {
        scenario: "open-restaurant".into(),
        complete: fire == PartStatus::Ok,
        parts: [
            ("licence".to_string(), result(PartStatus::Ok)),
            ("fire".to_string(), result(fire)),
        ]
        .into(),
    }
}

fn subjects() -> BTreeMap<String, String> {
    [("uscc".to_string(), "91120116MA07R3LP5D".to_string())].into()
}

#[tokio::test(start_paused = true)]
async fn outstanding_overdue_and_completion() {
    let clock = WallClock::new();
    let now = clock.now_micros();
    let mut case = Case::accept(
        "portal",
        "C1",
        &spec(),
        &subjects(),
        &reply(PartStatus::Missing),
        now,
    );
    assert_eq!(case.version, 1);
    assert_eq!(case.outstanding(), ["fire"]);
    assert!(case.parts["fire"].supply_later);
    assert!(!case.parts["licence"].supply_later);
    assert_eq!(case.supply_by - case.accepted_at, 30 * 86_400 * 1_000_000);
    assert!(!case.overdue(clock.now_micros()));
    tokio::time::advance(Duration::from_secs(30 * 86_400 + 1)).await;
    assert!(case.overdue(clock.now_micros()));
    let v = case.view(clock.now_micros(), None);
    assert_eq!(v["overdue"], true);
    assert!(v.get("subjects").is_none(), "subjects are never shown");
    let fetched: BTreeMap<_, _> = [("fire".to_string(), result(PartStatus::Ok))].into();
    case.apply(&spec(), &fetched, clock.now_micros());
    assert!(case.complete());
    assert_eq!(case.version, 2);
    assert!(
        !case.overdue(clock.now_micros()),
        "a complete case is never overdue"
    );
    let v = case.view(clock.now_micros(), Some(&fetched));
    assert_eq!(v["parts"]["fire"]["record"]["no"], 1);
    assert!(v["parts"]["licence"].get("record").is_none());
}

async fn store_contract(store: &dyn CaseStore) {
    let mut case = Case::accept(
        "a",
        "C1",
        &spec(),
        &subjects(),
        &reply(PartStatus::Missing),
        1_000,
    );
    store.save(&case).await.unwrap();
    // A second "first write" of the same key loses.
    assert_eq!(
        store.save(&case).await,
        Err(CaseError::Conflict("C1".into()))
    );
    // Ids are per client.
    assert_eq!(store.load("b", "C1").await.unwrap(), None);
    let mut other = case.clone();
    other.client = "b".into();
    store.save(&other).await.unwrap();
    assert_eq!(store.load("a", "C1").await.unwrap().as_ref(), Some(&case));
    assert_eq!(
        store.counts(1_000).await.unwrap(),
        CaseCounts {
            open: 2,
            overdue: 0
        }
    );
    assert_eq!(
        store.counts(case.supply_by + 1).await.unwrap(),
        CaseCounts {
            open: 2,
            overdue: 2
        }
    );
    // Compare-and-swap: a write based on a stale version is refused.
    let stale = case.clone();
    let fetched: BTreeMap<_, _> = [("fire".to_string(), result(PartStatus::Ok))].into();
    case.apply(&spec(), &fetched, 2_000);
    store.save(&case).await.unwrap();
    let mut lost = stale;
    lost.refreshes = 99;
    lost.version += 1;
    assert_eq!(
        store.save(&lost).await,
        Err(CaseError::Conflict("C1".into()))
    );
    let now = store.load("a", "C1").await.unwrap().unwrap();
    assert!(now.complete());
    assert_eq!(now.refreshes, 0);
    assert_eq!(store.counts(i64::MAX).await.unwrap().open, 1);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    store_contract(&MemoryCaseStore::default()).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/cases.sqlite");
    let store = SqliteCaseStore::open(&path).await.unwrap();
    store_contract(&store).await;
    store.close().await;
    let store = SqliteCaseStore::open(&path).await.unwrap();
    let case = store.load("a", "C1").await.unwrap().unwrap();
    assert!(case.complete());
    assert_eq!(case.subjects, subjects());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the case store is private to its owner");
    }
}

#[test]
fn path_case_ids_are_checked() {
    assert_eq!(case_id_from_path("BH-2026-0001").unwrap(), "BH-2026-0001");
    assert_eq!(case_id_from_path("%E5%8F%97%E7%90%86-1").unwrap(), "受理-1");
    for bad in [
        "%01",
        "a%0Ab",
        "%7F",
        "%E2%80%AE",
        "%FF",
        "%20%20",
        &"x".repeat(129),
    ] {
        assert!(case_id_from_path(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn one_change_per_case_at_a_time() {
    let cases = Arc::new(Cases::new(
        Arc::new(MemoryCaseStore::default()),
        WallClock::new(),
    ));
    let first = cases.lock("a", "C1").await;
    // Another case, or the same id of another client, is not held up.
    let _other = cases.lock("a", "C2").await;
    let _other_client = cases.lock("b", "C1").await;
    let waiter = {
        let cases = cases.clone();
        tokio::spawn(async move { cases.lock("a", "C1").await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    drop(first);
    waiter.await.unwrap();
}
