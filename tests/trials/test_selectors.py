"""The access chokepoint: who reads and who writes which participants (docs/style.md §2, §14)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from tests.factories import UserFactory, build_study, infused, member, screened
from trials import selectors
from trials.models import ParticipantStatus, Role


@pytest.fixture
def roster(study, sites, coordinator_site_a):
    """Two participants at site A and one at site B."""
    return {
        "a1": screened(study, sites[0], coordinator_site_a),
        "a2": screened(study, sites[0], coordinator_site_a),
        "b1": screened(study, sites[1], coordinator_site_a),
    }


def _codes(user, study=None):
    return sorted(p.subject_code for p in selectors.participant_list(user=user, study=study))


# ---------------------------------------------------------------------------------------------
# participant_list
# ---------------------------------------------------------------------------------------------


def test_a_coordinator_lists_only_the_participants_of_their_site(roster, study, coordinator_site_a, coordinator_site_b):
    assert _codes(coordinator_site_a) == ["S01-0001", "S01-0002"]
    assert _codes(coordinator_site_b, study) == ["S02-0001"]


def test_a_monitor_lists_only_the_participants_of_their_site(roster, monitor):
    assert _codes(monitor) == ["S01-0001", "S01-0002"]


def test_a_statistician_and_a_data_manager_list_every_site(roster, statistician, data_manager):
    assert _codes(statistician) == ["S01-0001", "S01-0002", "S02-0001"]
    assert _codes(data_manager) == ["S01-0001", "S01-0002", "S02-0001"]


def test_a_user_without_membership_lists_nothing(roster, outsider):
    assert _codes(outsider) == []


def test_a_sponsor_admin_sees_no_clinical_data(roster, study):
    admin = member("sponsor", study, Role.SPONSOR_ADMIN)

    assert _codes(admin) == []
    assert list(selectors.studies_visible_to(admin)) == []
    with pytest.raises(Http404):
        selectors.participant_get(user=admin, pk=roster["a1"].pk)


def test_an_inactive_user_lists_nothing(roster, study, sites):
    user = member("left_the_site", study, Role.COORDINATOR, sites[0])
    user.is_active = False
    user.save()

    assert _codes(user) == []


def test_a_site_bound_role_without_a_site_sees_nothing(roster, study):
    investigator = member("no_site_pi", study, Role.INVESTIGATOR, site=None)

    assert _codes(investigator) == []


def test_a_member_of_another_study_sees_nothing_of_this_one(roster, sites):
    other = build_study(code="TREG-MS-02", sites=list(sites))
    stranger = member("other_dm", other, Role.DATA_MANAGER)

    assert _codes(stranger) == []


def test_a_coordinator_at_two_sites_sees_both(roster, study, sites):
    user = member("roaming", study, Role.COORDINATOR, sites[0])
    member("roaming", study, Role.COORDINATOR, sites[1])

    assert _codes(user) == ["S01-0001", "S01-0002", "S02-0001"]


def test_the_list_filters_within_the_users_scope(roster, study, coordinator_site_a, data_manager):
    assert _codes_filtered(data_manager, study, {"site": "S02"}) == ["S02-0001"]
    assert _codes_filtered(coordinator_site_a, study, {"site": "S02"}) == []
    assert _codes_filtered(data_manager, study, {"q": "0002"}) == ["S01-0002"]
    assert _codes_filtered(data_manager, study, {"status": ParticipantStatus.ENROLLED}) == []


def _codes_filtered(user, study, filters):
    return sorted(p.subject_code for p in selectors.participant_list(user=user, study=study, filters=filters))


def test_the_list_runs_in_one_query_whatever_its_length(roster, study, data_manager, django_assert_num_queries):
    selectors.participant_list(user=data_manager)  # loads the membership cache
    with django_assert_num_queries(1):
        rows = [(p.subject_code, p.site.code, p.study.code) for p in selectors.participant_list(user=data_manager)]
    assert len(rows) == 3


def test_status_counts_only_count_what_the_user_may_see(roster, study, coordinator_site_a, data_manager):
    assert selectors.status_counts(user=coordinator_site_a, study=study) == {ParticipantStatus.SCREENING: 2}
    assert selectors.status_counts(user=data_manager, study=study) == {ParticipantStatus.SCREENING: 3}


# ---------------------------------------------------------------------------------------------
# participant_get: read and write
# ---------------------------------------------------------------------------------------------


def test_a_coordinator_reads_and_writes_a_participant_of_their_site(roster, coordinator_site_a):
    assert selectors.participant_get(user=coordinator_site_a, pk=roster["a1"].pk) == roster["a1"]
    assert selectors.participant_get(user=coordinator_site_a, pk=roster["a1"].pk, write=True) == roster["a1"]


@pytest.mark.parametrize("write", [False, True])
def test_a_coordinator_gets_404_for_a_participant_of_another_site(roster, coordinator_site_a, write):
    with pytest.raises(Http404):
        selectors.participant_get(user=coordinator_site_a, pk=roster["b1"].pk, write=write)


def test_a_participant_that_does_not_exist_is_indistinguishable_from_one_out_of_scope(roster, coordinator_site_a):
    with pytest.raises(Http404) as missing:
        selectors.participant_get(user=coordinator_site_a, pk=roster["b1"].pk + 1000)
    with pytest.raises(Http404) as hidden:
        selectors.participant_get(user=coordinator_site_a, pk=roster["b1"].pk)

    assert str(missing.value) == str(hidden.value)


def test_a_monitor_reads_but_cannot_write(roster, monitor):
    assert selectors.participant_get(user=monitor, pk=roster["a1"].pk) == roster["a1"]

    with pytest.raises(PermissionDenied):
        selectors.participant_get(user=monitor, pk=roster["a1"].pk, write=True)
    with pytest.raises(Http404):
        selectors.participant_get(user=monitor, pk=roster["b1"].pk)


@pytest.mark.parametrize("persona", ["statistician", "data_manager"])
def test_a_study_wide_read_only_role_reads_every_site_but_cannot_write(request, roster, persona):
    user = request.getfixturevalue(persona)

    assert selectors.participant_get(user=user, pk=roster["b1"].pk) == roster["b1"]
    with pytest.raises(PermissionDenied):
        selectors.participant_get(user=user, pk=roster["b1"].pk, write=True)


def test_a_user_without_membership_gets_404(roster, outsider):
    with pytest.raises(Http404):
        selectors.participant_get(user=outsider, pk=roster["a1"].pk)


def test_a_monitor_who_also_coordinates_another_site_writes_only_there(roster, study, sites):
    user = member("dual", study, Role.MONITOR, sites[0])
    member("dual", study, Role.COORDINATOR, sites[1])

    assert selectors.participant_get(user=user, pk=roster["b1"].pk, write=True) == roster["b1"]
    assert selectors.participant_get(user=user, pk=roster["a1"].pk) == roster["a1"]
    with pytest.raises(PermissionDenied):
        selectors.participant_get(user=user, pk=roster["a1"].pk, write=True)


def test_an_anonymous_user_gets_404(roster):
    with pytest.raises(Http404):
        selectors.participant_get(user=AnonymousUser(), pk=roster["a1"].pk)


# ---------------------------------------------------------------------------------------------
# visit_get goes through the same chokepoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def visits(study, sites, coordinator_site_a):
    a = infused(study, sites[0], coordinator_site_a)
    b = infused(study, sites[1], coordinator_site_a)
    return a.visits.get(definition__code="d28"), b.visits.get(definition__code="d28")


def test_visit_get_follows_the_participant_scope(visits, coordinator_site_a, monitor):
    visit_a, visit_b = visits

    assert selectors.visit_get(user=coordinator_site_a, pk=visit_a.pk, write=True) == visit_a
    assert selectors.visit_get(user=monitor, pk=visit_a.pk) == visit_a
    with pytest.raises(Http404):
        selectors.visit_get(user=coordinator_site_a, pk=visit_b.pk)
    with pytest.raises(PermissionDenied):
        selectors.visit_get(user=monitor, pk=visit_a.pk, write=True)
    with pytest.raises(Http404):
        selectors.visit_get(user=coordinator_site_a, pk=visit_b.pk + 1000)


# ---------------------------------------------------------------------------------------------
# Where a user may screen
# ---------------------------------------------------------------------------------------------


def test_a_coordinator_screens_only_at_their_site(study, sites, coordinator_site_a):
    assert list(selectors.sites_for_entry(coordinator_site_a, study)) == [sites[0]]


@pytest.mark.parametrize("persona", ["monitor", "statistician", "data_manager", "outsider"])
def test_read_only_roles_screen_nowhere(request, study, persona):
    user = request.getfixturevalue(persona)

    assert list(selectors.sites_for_entry(user, study)) == []


def test_a_site_bound_role_without_a_site_screens_nowhere(study):
    coordinator = member("no_site_coord", study, Role.COORDINATOR, site=None)

    assert list(selectors.sites_for_entry(coordinator, study)) == []


def test_only_a_data_entry_role_can_enter_data(roster, study, coordinator_site_a, monitor, data_manager):
    assert selectors.can_enter_data(coordinator_site_a, roster["a1"])
    assert not selectors.can_enter_data(coordinator_site_a, roster["b1"])
    assert not selectors.can_enter_data(monitor, roster["a1"])
    assert not selectors.can_enter_data(data_manager, roster["a1"])


def test_user_roles_lists_the_roles_in_one_study(study, sites):
    user = member("dual_roles", study, Role.MONITOR, sites[0])
    member("dual_roles", study, Role.INVESTIGATOR, sites[1])
    other = build_study(code="TREG-MS-02", sites=list(sites))
    member("dual_roles", other, Role.DATA_MANAGER)
    user = UserFactory(username="dual_roles")  # a fresh instance: the membership cache lives on the user

    assert selectors.user_roles(user, study) == {Role.MONITOR, Role.INVESTIGATOR}
    assert selectors.user_roles(user, other) == {Role.DATA_MANAGER}
