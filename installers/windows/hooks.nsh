; OnAir NSIS installer hooks (tauri.conf.json → bundle.windows.nsis.installerHooks).
; Viewers and OBS on other machines reach OnAir on TCP 8080 (HTTP), TCP 1935 (RTMP) and
; UDP/TCP 8189 (WebRTC): allow the app through Windows Firewall on install, remove the rule on
; uninstall. Per-program rules follow the ports if they are changed in the settings.

!macro NSIS_HOOK_POSTINSTALL
  nsExec::Exec 'netsh advfirewall firewall delete rule name="OnAir"'
  nsExec::Exec 'netsh advfirewall firewall add rule name="OnAir" dir=in action=allow program="$INSTDIR\onair-desktop.exe" enable=yes profile=private,domain'
!macroend

!macro NSIS_HOOK_PREUNINSTALL
  nsExec::Exec 'netsh advfirewall firewall delete rule name="OnAir"'
!macroend
