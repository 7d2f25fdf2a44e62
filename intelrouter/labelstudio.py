"""HTTP client for Label Studio 1.23: token auth, retries with back-off, projects, tasks, annotations."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from intelrouter.config import Settings
from intelrouter.errors import ConfigError, LabelStudioError

# Label Studio's Datetime filter parses exactly this format (anything else is a 500).
FILTER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ACCESS_TOKEN_SECONDS = 240  # personal access tokens yield 5-minute access tokens: renew a little early


class LabelStudioUnavailable(LabelStudioError):
    """Label Studio could not be reached or failed with 5xx; a write may or may not have been applied."""


def _backoff_sleep(seconds: float) -> None:
    time.sleep(seconds)


def is_personal_access_token(key: str) -> bool:
    """A personal access token is a JWT refresh token (three dot-separated parts); a legacy token is not."""
    return key.count(".") == 2 and key.startswith("eyJ")


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase or str(resp.status_code)
    if isinstance(body, dict) and (body.get("detail") or body.get("validation_errors")):
        parts = [body.get("detail"), body.get("validation_errors")]
        return " ".join(p if isinstance(p, str) else json.dumps(p) for p in parts if p)[:300]
    return json.dumps(body)[:300]


def parse_time(value: str) -> datetime:
    """A Label Studio timestamp ("2026-01-02T03:04:05.123456Z") as naive UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def task_filter(field: str, operator: str, value: Any, kind: str) -> dict[str, Any]:
    """One Data Manager filter item, e.g. task_filter("id", "greater", 10, "Number")."""
    if isinstance(value, datetime):
        value = value.strftime(FILTER_TIME_FORMAT)
    return {"filter": f"filter:tasks:{field}", "operator": operator, "type": kind, "value": value}


class LabelStudioClient:
    """A small, retrying client for the parts of the Label Studio REST API the review sync uses."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        if not url:
            raise ConfigError("INTELROUTER_LABEL_STUDIO_URL is not set: give the Label Studio base URL")
        if not api_key:
            raise ConfigError(
                "INTELROUTER_LABEL_STUDIO_API_KEY is not set: copy a token from Label Studio's Account & Settings"
            )
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"INTELROUTER_LABEL_STUDIO_URL={url!r}: give a URL such as http://127.0.0.1:8080")
        self.url = url.rstrip("/")
        self._key = api_key.strip()
        self._pat = is_personal_access_token(self._key)
        self._access: tuple[str, float] | None = None
        self.retries, self.backoff = max(1, retries), backoff
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LabelStudioClient:
        """A client for the configured server; a missing URL or key is a ConfigError naming the setting."""
        return cls(settings.label_studio_url or "", settings.label_studio_api_key or "", **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- transport ---------------------------------------------------------------------------------

    def _token_error(self, resp: httpx.Response) -> LabelStudioError:
        kind = "personal access token" if self._pat else "legacy API token"
        hint = (
            "create a new personal access token under Account & Settings"
            if self._pat
            else "copy the token from Account & Settings (legacy tokens work only when the organisation "
            "enables them), or use a personal access token"
        )
        return LabelStudioError(
            f"Label Studio at {self.url} refused the {kind} in INTELROUTER_LABEL_STUDIO_API_KEY "
            f"({resp.status_code} {_detail(resp)}): {hint}"
        )

    def _authorization(self, renew: bool = False) -> str:
        if not self._pat:
            return f"Token {self._key}"
        if renew or self._access is None or self._access[1] < time.monotonic():
            resp = self._send("POST", "/api/token/refresh", json_body={"refresh": self._key}, auth=False)
            if resp.status_code in (400, 401, 403):
                raise self._token_error(resp)
            self._check(resp, "POST", "/api/token/refresh")
            self._access = (resp.json()["access"], time.monotonic() + ACCESS_TOKEN_SECONDS)
        return f"Bearer {self._access[0]}"

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json_body: Any = None,
        idempotent: bool = True,
        auth: bool = True,
    ) -> httpx.Response:
        """Send with retries: connection failures always (nothing was sent), other failures and 5xx only
        when the request is idempotent; a non-idempotent write that may have landed is never repeated."""
        last = ""
        renewed = False
        for attempt in range(self.retries):
            if attempt:
                _backoff_sleep(self.backoff * 2 ** (attempt - 1))
            headers = {"Authorization": self._authorization()} if auth else {}
            try:
                resp = self._http.request(method, path, params=params, json=json_body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if idempotent:
                    continue
                raise LabelStudioUnavailable(
                    f"Label Studio at {self.url} dropped {method} {path} ({last}); it may have been applied"
                ) from None
            if resp.status_code == 401 and auth and self._pat and not renewed:
                renewed = True  # the access token expired early: renew it once, then trust the answer
                self._authorization(renew=True)
                continue
            if resp.status_code >= 500:
                last = f"{resp.status_code} {_detail(resp)}"
                if idempotent:
                    continue
                raise LabelStudioUnavailable(
                    f"Label Studio at {self.url} failed {method} {path} ({last}); it may have been applied"
                )
            return resp
        raise LabelStudioUnavailable(
            f"cannot reach Label Studio at {self.url} after {self.retries} attempts ({last}): "
            "check INTELROUTER_LABEL_STUDIO_URL and that the server runs"
        )

    def _check(self, resp: httpx.Response, method: str, path: str) -> httpx.Response:
        if resp.status_code in (401, 403):
            raise self._token_error(resp)
        if resp.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio refused {method} {path}: {resp.status_code} {_detail(resp)}"
            )
        return resp

    def request(
        self, method: str, path: str, *, params: Any = None, json_body: Any = None, idempotent: bool = True
    ) -> Any:
        """One API call; returns the decoded JSON (None when empty). 401/403 raise at once, naming the token."""
        resp = self._check(
            self._send(method, path, params=params, json_body=json_body, idempotent=idempotent), method, path
        )
        return resp.json() if resp.content else None

    # --- API -----------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to."""
        return self.request("GET", "/api/current-user/whoami")

    def users(self) -> dict[int, str]:
        """Map user id -> email (or username) for naming reviewers."""
        body = self.request("GET", "/api/users")
        users = body.get("results", []) if isinstance(body, dict) else body  # paginated in some versions
        return {u["id"]: u.get("email") or u.get("username") or str(u["id"]) for u in users}

    def get_project(self, project_id: int) -> dict[str, Any]:
        """One project; an unknown id is a LabelStudioError that says how to create it."""
        resp = self._send("GET", f"/api/projects/{project_id}")
        if resp.status_code == 404:
            raise LabelStudioError(
                f"Label Studio project {project_id} does not exist at {self.url}: run `intelrouter review setup` "
                "and set INTELROUTER_LABEL_STUDIO_PROJECT_ID to the id it prints"
            )
        return self._check(resp, "GET", f"/api/projects/{project_id}").json()

    def find_project(self, title: str) -> dict[str, Any] | None:
        """The first project with this exact title, or None."""
        page = 1
        while True:
            body = self.request("GET", "/api/projects", params={"title": title, "page": page, "page_size": 100})
            for project in body.get("results", []):
                if project.get("title") == title:
                    return project
            if not body.get("next"):
                return None
            page += 1

    def create_project(self, title: str, label_config: str, description: str = "") -> dict[str, Any]:
        """Create a project with a labeling config."""
        body = {"title": title, "label_config": label_config, "description": description}
        return self.request("POST", "/api/projects", json_body=body, idempotent=False)

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        """Change project fields (title, description, label_config, ...)."""
        return self.request("PATCH", f"/api/projects/{project_id}", json_body=fields)

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Import tasks (with predictions) in one request; returns their new ids in the order given.

        Label Studio does not de-duplicate, so this is never retried once the request may have landed:
        the caller reconciles by listing tasks instead.
        """
        if not tasks:
            return []
        body = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json_body=list(tasks),
            idempotent=False,
        )
        ids = (body or {}).get("task_ids")
        if not isinstance(ids, list) or len(ids) != len(tasks):
            raise LabelStudioUnavailable(
                f"Label Studio import into project {project_id} returned {len(ids or [])} task ids "
                f"for {len(tasks)} tasks; run the push again to reconcile"
            )
        return [int(i) for i in ids]

    def _tasks_page(
        self, project_id: int, filters: Sequence[dict[str, Any]], ordering: str, include: Sequence[str],
        page_size: int, all_fields: bool,
    ) -> list[dict[str, Any]]:
        query = {"filters": {"conjunction": "and", "items": list(filters)}, "ordering": [ordering]}
        params: dict[str, Any] = {
            "project": project_id,
            "page": 1,
            "page_size": page_size,
            "include": ",".join(include),
            "query": json.dumps(query),
        }
        if all_fields:
            params["fields"] = "all"
        resp = self._send("GET", "/api/tasks", params=params)
        if resp.status_code == 404 and "page" in resp.text.lower():
            return []  # Label Studio answers an empty result with 404 "Invalid page."
        return self._check(resp, "GET", "/api/tasks").json().get("tasks", [])

    def iter_tasks(
        self,
        project_id: int,
        *,
        filters: Sequence[dict[str, Any]] = (),
        include: Sequence[str] = ("id", "data"),
        page_size: int = 1000,
        after_id: int = 0,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of a project's tasks in id order, paging by id so tasks added meanwhile shift nothing."""
        cursor = after_id
        while True:
            items = [*filters, task_filter("id", "greater", cursor, "Number")]
            tasks = self._tasks_page(project_id, items, "tasks:id", include, page_size, all_fields=False)
            if not tasks:
                return
            yield tasks
            cursor = max(int(t["id"]) for t in tasks)
            if len(tasks) < page_size:
                return

    def annotated_tasks(
        self, project_id: int, *, since: datetime | None = None, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of tasks with annotations (skipped ones included) changed after `since` (naive UTC), oldest
        change first, so a pull stopped early leaves only later changes behind.

        Pages by updated_at, not by page number: a task annotated meanwhile moves behind the cursor and is
        still seen, where page numbers would shift and skip one.
        """
        # The nested names pick what each annotation carries; `fields=all` alone is three times slower.
        include = ("id", "data", "updated_at", "annotations", "result", "was_cancelled", "completed_by", "created_at")
        cursor, seen = since, set[int]()
        while True:
            filters = [task_filter("annotators", "empty", False, "List")]
            if cursor is not None:  # "greater" is strict: step back 1 µs so ties with the cursor come back
                filters.append(task_filter("updated_at", "greater", cursor - timedelta(microseconds=1), "Datetime"))
            tasks = self._tasks_page(project_id, filters, "tasks:updated_at", include, page_size, all_fields=True)
            fresh = {t["id"]: t for t in tasks if t["id"] not in seen}  # a dict: the annotators join repeats tasks
            if fresh:
                yield list(fresh.values())
            if len(tasks) < page_size:
                return
            newest = max(parse_time(t["updated_at"]) for t in tasks)
            if newest == cursor and not fresh:
                raise LabelStudioError(
                    f"more than {page_size} tasks of project {project_id} share the change time {newest}: "
                    "pull with a larger batch"
                )
            at_newest = {t["id"] for t in tasks if parse_time(t["updated_at"]) == newest}
            seen = (seen | at_newest) if newest == cursor else at_newest
            cursor = newest

    def columns(self, project_id: int) -> list[str]:
        """The Data Manager's column ids of a project: "id", "total_annotations", "data.text", ..."""
        body = self.request("GET", "/api/dm/columns", params={"project": project_id})
        return [f"{c['parent']}.{c['id']}" if c.get("parent") else c["id"] for c in body.get("columns", [])]

    def views(self, project_id: int) -> list[dict[str, Any]]:
        """A project's Data Manager views (its tabs), leftmost first."""
        return self.request("GET", "/api/dm/views", params={"project": project_id})

    def create_view(self, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Add a Data Manager view (a tab) to a project."""
        body = {"project": project_id, "data": data}
        return self.request("POST", "/api/dm/views", json_body=body, idempotent=False)

    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Replace a Data Manager view's data (columns, ordering, filters)."""
        return self.request("PATCH", f"/api/dm/views/{view_id}", json_body={"project": project_id, "data": data})

    def order_views(self, project_id: int, view_ids: Sequence[int]) -> None:
        """Put a project's Data Manager tabs in this order (the first one opens by default)."""
        self.request("POST", "/api/dm/views/order", json_body={"project": project_id, "ids": list(view_ids)})

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], *, was_cancelled: bool = False
    ) -> dict[str, Any]:
        """Submit an annotation on a task, as a reviewer does in the labeling UI."""
        body = {"result": result, "was_cancelled": was_cancelled}
        return self.request("POST", f"/api/tasks/{task_id}/annotations", json_body=body, idempotent=False)

    def update_annotation(self, annotation_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace an annotation's result, as a reviewer correcting an answer does."""
        return self.request("PATCH", f"/api/annotations/{annotation_id}", json_body={"result": result})

    def create_personal_access_token(self) -> str:
        """Create a personal access token for the current user (needs the organisation to allow them)."""
        return self.request("POST", "/api/token/", idempotent=False)["token"]
