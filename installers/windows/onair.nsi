; The OnAir installer for Windows (NSIS 3, built on Linux by scripts/build-windows.sh):
;   makensis -DVERSION=0.1.0 -DBINDIR=<dir> -DOUTFILE=<setup.exe> [-DCOMPRESSOR=zlib] onair.nsi
;
; A per-user install: no administrator rights, no questions. It puts the desktop app and the
; headless `onair.exe` in %LOCALAPPDATA%\Programs\OnAir, adds a Start-menu entry and an entry in
; "Installed apps" with an uninstaller, and registers the app's notification identity. Silent with
; /S (the uninstaller too). Settings, the stream key secret (Credential Manager) and OBS profiles
; are the streamer's and are kept on uninstall.
;
; Windows Firewall: a per-user installer cannot add a rule; Windows asks once, when OnAir first
; listens, and the app tells the streamer to allow private and public networks (docs/windows.md).

Unicode true
Target amd64-unicode
!ifdef COMPRESSOR
  SetCompressor /SOLID ${COMPRESSOR}
!else
  SetCompressor /SOLID lzma
!endif
RequestExecutionLevel user

!ifndef VERSION
  !error "define VERSION (e.g. -DVERSION=0.1.0)"
!endif
!ifndef BINDIR
  !error "define BINDIR: the folder holding onair-desktop.exe, WebView2Loader.dll and onair.exe"
!endif
!ifndef OUTFILE
  !define OUTFILE "OnAir-${VERSION}-setup.exe"
!endif

!define APP "OnAir"
!define PUBLISHER "OnAir"
; The app's identifier (tauri.conf.json) is also its AppUserModelID for notifications.
!define AUMID "org.onair.desktop"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"
!define AUMID_KEY "Software\Classes\AppUserModelId\${AUMID}"
; WebView2 Runtime (the desktop app's web view): its EdgeUpdate client id.
!define WEBVIEW2_ID "{F3017226-FE2A-4295-8BDF-00C3A9A7E4C5}"
!define WEBVIEW2_URL "https://go.microsoft.com/fwlink/p/?LinkId=2124703"

!include "MUI2.nsh"
!include "LogicLib.nsh"

Name "${APP}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"
BrandingText "${APP} ${VERSION}"

VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP} installer"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "LegalCopyright" "OnAir contributors, MIT OR Apache-2.0"

!define MUI_ICON "../../icons/icon.ico"
!define MUI_UNICON "../../icons/icon.ico"
!define MUI_FINISHPAGE_RUN "$INSTDIR\onair-desktop.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP}"

!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Section "OnAir" SecMain
  SetOutPath "$INSTDIR"
  File "${BINDIR}/onair-desktop.exe"
  ; The WebView2 loader the desktop app links (webview2-com, GNU target).
  File "${BINDIR}/WebView2Loader.dll"
  File "${BINDIR}/onair.exe"
  File "/oname=onair.ico" "../../icons/icon.ico"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  CreateDirectory "$SMPROGRAMS\${APP}"
  CreateShortcut "$SMPROGRAMS\${APP}\${APP}.lnk" "$INSTDIR\onair-desktop.exe" "" "$INSTDIR\onair.ico"

  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\onair.ico"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1

  ; Notifications of an unpackaged app show under this name and icon.
  WriteRegStr HKCU "${AUMID_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${AUMID_KEY}" "IconUri" "$INSTDIR\onair.ico"

  Call CheckWebView2
SectionEnd

; The desktop app needs the WebView2 Runtime: part of Windows 11 and of updated Windows 10. When it
; is missing, say so (and offer the download page) instead of leaving a window that never opens.
Function CheckWebView2
  ReadRegStr $0 HKLM "SOFTWARE\WOW6432Node\Microsoft\EdgeUpdate\Clients\${WEBVIEW2_ID}" "pv"
  ${If} $0 == ""
    ReadRegStr $0 HKLM "SOFTWARE\Microsoft\EdgeUpdate\Clients\${WEBVIEW2_ID}" "pv"
  ${EndIf}
  ${If} $0 == ""
    ReadRegStr $0 HKCU "Software\Microsoft\EdgeUpdate\Clients\${WEBVIEW2_ID}" "pv"
  ${EndIf}
  ${If} $0 == ""
  ${OrIf} $0 == "0.0.0.0"
    DetailPrint "The Microsoft Edge WebView2 Runtime is not installed: the OnAir window needs it (${WEBVIEW2_URL})."
    MessageBox MB_YESNO|MB_ICONINFORMATION "OnAir's window needs the Microsoft Edge WebView2 Runtime, which this PC does not have yet (Windows 11 includes it).$\r$\n$\r$\nOpen Microsoft's download page now?" /SD IDNO IDNO +2
      ExecShell "open" "${WEBVIEW2_URL}"
  ${EndIf}
FunctionEnd

Section "Uninstall"
  Delete "$INSTDIR\onair-desktop.exe"
  Delete "$INSTDIR\WebView2Loader.dll"
  Delete "$INSTDIR\onair.exe"
  Delete "$INSTDIR\onair.ico"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${APP}\${APP}.lnk"
  RMDir "$SMPROGRAMS\${APP}"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
  DeleteRegKey HKCU "${AUMID_KEY}"
SectionEnd
