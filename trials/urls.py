from django.urls import path

from trials import views

app_name = "trials"

urlpatterns = [
    path("", views.home, name="home"),
    # Study level
    path("studies/<slug:study_code>/participants/", views.participant_list, name="participant_list"),
    path("studies/<slug:study_code>/participants/screen/", views.participant_screen, name="participant_screen"),
    # One participant's casebook
    path("participants/<int:pk>/", views.participant_detail, name="participant_detail"),
    path("participants/<int:pk>/consent/", views.consent_record, name="consent_record"),
    path("participants/<int:pk>/eligibility/", views.eligibility_record, name="eligibility_record"),
    path("participants/<int:pk>/screen-failure/", views.screen_failure, name="screen_failure"),
    path("participants/<int:pk>/enrol/", views.participant_enrol, name="participant_enrol"),
    path("participants/<int:pk>/infusion/", views.infusion_record, name="infusion_record"),
    path("infusions/<int:pk>/correct/", views.infusion_correct, name="infusion_correct"),
    path("participants/<int:pk>/visits/add/", views.visit_add, name="visit_add"),
    path("participants/<int:pk>/relapse/", views.relapse_record, name="relapse_record"),
    path("participants/<int:pk>/rescue-therapy/", views.rescue_therapy_record, name="rescue_therapy_record"),
    path("participants/<int:pk>/insulin/", views.insulin_dose_record, name="insulin_dose_record"),
    path("participants/<int:pk>/disposition/", views.disposition_record, name="disposition_record"),
    path("participants/<int:pk>/history/", views.participant_history, name="participant_history"),
    path("participants/<int:pk>/lock/", views.casebook_lock, name="casebook_lock"),
    path("participants/<int:pk>/sign/", views.casebook_sign, name="casebook_sign"),
    path("participants/<int:pk>/unblind/", views.participant_unblind, name="participant_unblind"),
    path("studies/<slug:study_code>/audit.csv", views.study_audit_export, name="study_audit_export"),
    path("studies/<slug:study_code>/lock/", views.study_lock, name="study_lock"),
    path("visits/<int:pk>/void/", views.visit_void, name="visit_void"),
    # One visit
    path("visits/<int:pk>/row/", views.visit_row, name="visit_row"),
    path("visits/<int:pk>/record/", views.visit_record, name="visit_record"),
    path("visits/<int:pk>/missed/", views.visit_missed, name="visit_missed"),
    path("visits/<int:pk>/assessment/", views.assessment_record, name="assessment_record"),
    path("visits/<int:pk>/mri/", views.mri_record, name="mri_record"),
    path("visits/<int:pk>/mmtt/", views.mmtt_record, name="mmtt_record"),
]
